"""``modbind demo``: world → anchors → align audio and depth on English captions only → evaluate → table.

The steps are the real ones a user runs on real data: the anchor is an open_clip ``local-dir:`` model
loaded by :func:`modbind.load_anchor`; alignment is :func:`modbind.align` (what ``modbind align`` runs),
once with the audio_beats plugin and once, separately, with the depth_conv plugin; the two exports become
one bundle (:func:`modbind.create_bundle`) reloaded with :func:`modbind.load`. Two controls run beside
the method: the same encoders untrained (chance), and the same pipeline on an anchor trained on English
captions only (multilingual transfer must vanish while audio→image and audio↔depth survive — it is the
anchor that carries the languages). Audio and depth never see each other: any audio↔depth retrieval
comes from the one space they were each aligned to.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modbind import AnchorConfig, Recipe
from modbind.demo.anchor import (
    AnchorRecipe,
    DemoAnchor,
    build_demo_anchor,
    default_cache_dir,
)
from modbind.demo.parallel import Job, SideBySide, StepCallback
from modbind.demo.report import DemoReport, Row, markdown_table, write_report
from modbind.demo.scoring import MODALITIES, EvalSet, anchor_ceiling, evaluate_model, measures
from modbind.demo.world import WorldPaths, generate_world

ALIGN_SETTINGS: dict[str, Any] = {
    "plugin": {
        "name": "audio_beats",
        "options": {"size": "tiny", "clip_seconds": 1.5, "freq_mask": 16, "time_mask": 24},
    },
    "data": {"caption_language": "en", "num_workers": 0},
    "train": {
        "batch_size": 32,
        "max_steps": 400,
        "head": "linear",
        "log_every": 25,
        "checkpoint_every": 100000,
        "optimizer": {"lr": 2.5e-3, "min_lr": 2.5e-4, "warmup_steps": 30},
    },
}
"""The demo's audio alignment settings (``recipes/demo.yaml`` holds the same; a test keeps them equal).

Larger learning rate than the paper's 5e-5 because the tiny BEATs starts from random weights; short
clips and small SpecAugment masks because the world's clips are 1–4 s and its fbank has 128 bins.
Enough steps for the loss to flatten: stopping when English accuracy saturates leaves audio→image lower.
"""

DEPTH_ALIGN_SETTINGS: dict[str, Any] = {
    "plugin": {"name": "depth_conv", "options": {"size": 32, "channels": [16, 32, 64]}},
    "data": {"caption_language": "en", "num_workers": 0},
    "train": {
        "batch_size": 32,
        "max_steps": 500,
        "head": "linear",
        "logit_scale": 7.0,
        "learn_logit_scale": False,
        "log_every": 25,
        "checkpoint_every": 100000,
        "optimizer": {"lr": 5e-3, "min_lr": 5e-4, "warmup_steps": 20},
    },
}
"""The demo's depth alignment settings (``recipes/demo_depth.yaml`` holds the same; a test keeps them equal).

The world's 32×32 depth maps at full size into a three-block CNN from random weights; the same English
captions as audio, never a clip, a picture or another language. A fixed, low logit scale (7 instead of the
anchor's ~21, learned) keeps pulling each map towards its captions' embedding after the batch is told
apart, which is what lets it meet the audio encoder in the shared space (full demo, seed 0: audio↔depth
R@1 29 / 24 instead of 10 / 10, depth zero-shot 71–81 % instead of 83–85 %).
"""

WORKER_PRELOAD = ("torch", "open_clip", "deepspeed", "modbind.anchor", "modbind.train.trainer", "modbind.eval.suite",
                  "modbind.model.bundle", "modbind_audio_beats.plugin", "modbind_depth_conv.plugin", "modbind.demo.run")
"""What the demo's workers import before their first job (once, in the fork server where there is one)."""


@dataclass(frozen=True)
class DemoMode:
    """Sizes of one demo run: the full one (about two minutes on 2 CPU cores) or ``--quick`` (under one; tests use it)."""

    name: str
    world: dict[str, Any]
    anchor: AnchorRecipe
    align_steps: int
    clip_seconds: float
    depth_steps: int


FULL = DemoMode("full", world={}, anchor=AnchorRecipe(), align_steps=400, clip_seconds=1.5, depth_steps=500)
QUICK = DemoMode(
    "quick",
    world={"n_per_concept": 12, "n_scenes": 64, "n_test_per_concept": 3, "n_test_scenes": 24,
           "duration": (1.0, 1.5)},
    anchor=AnchorRecipe(steps=250),
    align_steps=220,
    clip_seconds=1.0,
    depth_steps=400,
)


@dataclass
class DemoRun:
    """Where a finished demo left its pieces."""

    out_dir: Path
    report: DemoReport
    files: dict[str, Path]
    world: WorldPaths
    anchors: dict[str, DemoAnchor] = field(default_factory=dict)


def alignments(mode: DemoMode) -> dict[str, tuple[dict[str, Any], int, dict[str, Any]]]:
    """Per modality: its settings, its steps in ``mode`` and the options ``mode`` changes."""
    return {"audio": (ALIGN_SETTINGS, mode.align_steps, {"clip_seconds": mode.clip_seconds}),
            "depth": (DEPTH_ALIGN_SETTINGS, mode.depth_steps, {})}


def demo_recipe(settings: dict[str, Any], world: WorldPaths, anchor: DemoAnchor, out_dir: Path, *, steps: int,
                seed: int, cache_dir: Path, options: dict[str, Any] | None = None) -> Recipe:
    """An alignment recipe: ``settings`` plus this run's data, anchor, options, steps and seed."""
    data = copy.deepcopy(settings)
    data["plugin"]["options"].update(options or {})
    data["train"].update(max_steps=steps, seed=seed)
    data["data"].update(train=[{"manifest": str(world.train)}], caption_cache=str(cache_dir / "captions"))
    data["anchor"] = anchor.config.model_dump(mode="json")
    data["output"] = {"dir": str(out_dir)}
    return Recipe.model_validate(data)


def run_demo(out_dir: Path, *, seed: int = 0, quick: bool = False, cache_dir: Path | None = None,
             progress: bool = True, echo: Callable[[str], None] = print, mode: DemoMode | None = None,
             workers: int | None = None) -> DemoRun:
    """Run the whole demo and write ``demo_report.{json,md,png}`` into ``out_dir``.

    ``mode`` overrides the sizes chosen by ``quick`` (tests use a smaller world to check the plumbing).
    The anchors, the alignments and the evaluations run side by side in ``workers`` worker processes
    (default: one per core, at most two; 1 runs everything in this process). As with any multiprocessing
    code that does not plain-fork, a script that calls this needs the ``if __name__ == "__main__":`` guard.
    Each condition's runs land in ``out_dir/<condition>/{audio,depth,bundle,eval}``.
    """
    mode = mode or (QUICK if quick else FULL)
    out_dir = Path(out_dir)
    cache = Path(cache_dir or default_cache_dir()) / "demo"
    timings: dict[str, float] = {}
    clock = _Stopwatch(timings)

    worker_log = out_dir / "demo_workers.log"
    with SideBySide(workers, progress=progress, preload=WORKER_PRELOAD, log_file=worker_log) as side_by_side:
        with clock("world"):
            world = generate_world(cache / f"world-{mode.name}-seed{seed}", seed=seed, progress=progress,
                                   **mode.world)
        echo(f"world: {world.root} ({world.counts})")

        anchor_recipes = {"aligned": replace(mode.anchor, seed=seed),
                          "en_only_anchor": replace(mode.anchor, seed=seed, languages=("en",))}
        with clock("anchors"):
            built = side_by_side.run([Job(f"anchor: {name}", anchor_job, (world, recipe, cache.parent), recipe.steps)
                                      for name, recipe in anchor_recipes.items()])
        anchors: dict[str, DemoAnchor] = {name: built[f"anchor: {name}"] for name in anchor_recipes}
        for name, anchor in anchors.items():
            echo(f"anchor ({name}): {anchor.path}")

        with clock("align"):
            for name in anchors:
                _clear_previous_run(out_dir / name)
            jobs = [Job(f"align {modality}: {name}", align_job,
                        (demo_recipe(settings, world, anchor, out_dir / name / modality, steps=steps, seed=seed,
                                     cache_dir=cache, options=options),), steps)
                    for modality, (settings, steps, options) in alignments(mode).items()  # longest jobs first
                    for name, anchor in anchors.items()]
            trained = side_by_side.run(jobs)
        exports = {name: {m: trained[f"align {m}: {name}"] for m in MODALITIES} for name in anchors}

        tests = EvalSet.read(world)
        languages = list(world.spec.languages)
        with clock("evaluate"):
            values, ceiling = _evaluate(side_by_side, exports, anchors, tests, languages, seed, mode, out_dir, cache)
    report = DemoReport(
        rows=[Row(m.key, m.title, m.group, m.chance, {k: v[m.key] for k, v in values.items()},
                  ceiling.get(m.key)) for m in measures(tests, languages)],
        settings={"mode": mode.name, "seed": seed, "world": world.spec.key(), "world_counts": world.counts,
                  "anchors": {k: str(a.path) for k, a in anchors.items()},
                  "exports": {k: {m: str(p) for m, p in e.items()} for k, e in exports.items()},
                  "bundles": {k: str(out_dir / k / "bundle") for k in exports},
                  "align": ALIGN_SETTINGS, "align_steps": mode.align_steps, "clip_seconds": mode.clip_seconds,
                  "align_depth": DEPTH_ALIGN_SETTINGS, "depth_steps": mode.depth_steps,
                  "side_by_side_jobs": side_by_side.workers},
        timings=timings,
        notes=[
            "audio and depth were each aligned on English captions only, separately: neither saw a picture, "
            "another language or the other modality",
            "retrieval hits (audio→text, audio→image, audio↔depth) count any caption/picture/map with the clip's "
            "exact concept set",
            "zero-shot prompts per language (both modalities): " + "; ".join(f"{k}: '{v}'" for k, v in
                                                                             _prompts(languages).items()),
            "anchor text→image column: the anchor's own zero-shot on the test pictures (the ceiling audio can inherit)",
        ],
    )
    files = write_report(report, out_dir)
    echo(markdown_table(report))
    echo(f"report: {files['markdown']} (+ .json, .png)")
    if side_by_side.workers > 1:
        echo(f"worker output (training logs, library notices): {worker_log}")
    return DemoRun(out_dir, report, files, world, anchors)


def anchor_job(world: WorldPaths, recipe: AnchorRecipe, cache_dir: Path, *, on_step: StepCallback) -> DemoAnchor:
    """Build (or reuse) one demo anchor; a :class:`Job` for :class:`SideBySide`."""
    return build_demo_anchor(world, recipe, cache_dir=cache_dir, progress=False, on_step=on_step)


def align_job(recipe: Recipe, *, on_step: StepCallback) -> Path:
    """Train through the same function ``modbind align`` calls; returns the export folder."""
    import modbind

    return Path(modbind.align(recipe, progress=False, on_step=lambda report: on_step(report.step)).export_dir)


def _evaluate(side_by_side: SideBySide, exports: dict[str, dict[str, Path]], anchors: dict[str, DemoAnchor],
              tests: EvalSet, languages: list[str], seed: int, mode: DemoMode, out_dir: Path, cache: Path
              ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Scores of the aligned bundle, the English-only-anchor control and the untrained control.

    Each trained bundle is queried through the anchor its two models were aligned to (as ``modbind eval``
    does); the untrained encoders through the multilingual anchor. Each suite report lands in
    ``<out>/<name>/eval``.
    """
    models: dict[str, TrainedBundle | UntrainedBundle] = {
        name: TrainedBundle(out_dir / name / "bundle", tuple(paths[m] for m in MODALITIES))
        for name, paths in exports.items()}
    models["untrained"] = UntrainedBundle(tuple(
        UntrainedEncoder(settings["plugin"]["name"], {**settings["plugin"]["options"], **options},
                         anchors["aligned"].config, seed)
        for settings, _, options in alignments(mode).values()))
    jobs = [Job(f"evaluate: {name}", evaluate_job, (source, tests, languages, out_dir / name / "eval", cache / "eval"), 1)
            for name, source in models.items()]
    jobs.append(Job("evaluate: anchor ceiling", ceiling_job, (anchors["aligned"].config, tests, languages), 1))
    done = side_by_side.run(jobs)
    values = {name: done[f"evaluate: {name}"] for name in models}
    return values, done["evaluate: anchor ceiling"]


@dataclass(frozen=True)
class UntrainedEncoder:
    """The chance-level control: the plugin's encoder with seeded random weights, in the anchor's space."""

    plugin: str
    options: dict[str, Any]
    anchor: AnchorConfig
    seed: int

    def build(self) -> Any:
        import modbind

        return modbind.untrained(self.plugin, self.options, self.anchor, seed=self.seed)


@dataclass(frozen=True)
class UntrainedBundle:
    """The untrained control of a bundle: every member's encoder untrained, in one space."""

    members: tuple[UntrainedEncoder, ...]

    def build(self) -> Any:
        import modbind

        return modbind.AlignedBundle([member.build() for member in self.members])


@dataclass(frozen=True)
class TrainedBundle:
    """A condition's exports (one per modality), bundled into ``folder`` as a user would, then loaded."""

    folder: Path
    exports: tuple[Path, ...]

    def build(self) -> Any:
        import modbind

        return modbind.load(modbind.create_bundle(self.folder, self.exports))


def evaluate_job(source: TrainedBundle | UntrainedBundle, tests: EvalSet, languages: list[str], report_dir: Path,
                 cache_dir: Path, *, on_step: StepCallback) -> dict[str, float]:
    """Every demo measure for one condition's bundle; a :class:`Job`."""
    folder = source.folder if isinstance(source, TrainedBundle) else None
    values = evaluate_model(source.build(), tests, languages, report_dir=report_dir, cache_dir=cache_dir,
                            model_path=folder)
    on_step(1)
    return values


def ceiling_job(anchor: AnchorConfig, tests: EvalSet, languages: list[str], *, on_step: StepCallback
                ) -> dict[str, float]:
    """The anchor's own text→image zero-shot: the ceiling audio can inherit."""
    import modbind

    ceiling = anchor_ceiling(modbind.load_anchor(anchor), tests, languages)
    on_step(1)
    return ceiling


def _prompts(languages: list[str]) -> dict[str, str]:
    from modbind.demo.captions import PROMPTS

    return {lang: PROMPTS[lang] for lang in languages}


def _clear_previous_run(run_dir: Path) -> None:
    """Remove an earlier demo run of a condition (only a folder the demo wrote: it has audio/recipe.yaml)."""
    if run_dir.exists() and (run_dir / "audio" / "recipe.yaml").is_file():
        shutil.rmtree(run_dir)


class _Stopwatch:
    """``with clock("stage"):`` records wall seconds per stage."""

    def __init__(self, timings: dict[str, float]):
        self.timings = timings

    def __call__(self, stage: str) -> "_Stopwatch":
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timings[self._stage] = round(time.perf_counter() - self._start, 2)
