"""The functions a script needs, re-exported as ``modbind.load``, ``modbind.align``, ``modbind.evaluate``...

This is an edge of the library: it looks the installed plugins up (:func:`modbind.plugins.get_registry`)
and passes them down, so everything underneath takes its plugins as arguments. The demo uses only
these names, as a third-party script would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modbind.config import AnchorConfig, Recipe

if TYPE_CHECKING:  # pragma: no cover
    from modbind.anchor import Anchor
    from modbind.eval.result import TaskResult
    from modbind.suites import Suite
    from modbind.model import AlignedBundle, AlignedModel
    from modbind.train.trainer import RunResult, StepReport


def load(path: str | Path | Sequence[str | Path], *more: str | Path, device: str = "cpu",
         anchor: AnchorConfig | str | None = None) -> AlignedModel | AlignedBundle:
    """Load an exported, aligned model folder (weights + card) for embedding and evaluation.

    Several exports (or a bundle folder, see ``modbind bundle create``) that share an anchor load as one
    :class:`modbind.AlignedBundle`, which encodes each of their modalities plus text and images. The
    cards' plugins and anchor provider come from the installed plugins. ``anchor`` (a config or a model
    string such as ``local-dir:/new/place``) loads the anchor from elsewhere than the card says, e.g. after
    its folder moved; it must be the same anchor (same identity).
    """
    from modbind.config import anchor_config
    from modbind.model import is_bundle, load_aligned_model, load_bundle
    from modbind.plugins import get_registry

    config = anchor_config(anchor) if isinstance(anchor, str) else anchor
    paths = [*(path if isinstance(path, (list, tuple)) else [path]), *more]
    if len(paths) == 1 and not is_bundle(paths[0]):
        return load_aligned_model(paths[0], get_registry(), device=device, anchor=config)
    return load_bundle(paths, get_registry(), device=device, anchor=config)


def load_anchor(config: AnchorConfig | Mapping[str, Any], device: str | None = None) -> Anchor:
    """The frozen anchor an ``anchor`` recipe section describes, via the provider that handles it."""
    from modbind.anchor import load_anchor as load_with
    from modbind.plugins import get_registry

    config = config if isinstance(config, AnchorConfig) else AnchorConfig.model_validate(dict(config))
    return load_with(config, get_registry().anchor_provider(config.model), device=device)


def untrained(plugin: str, options: Mapping[str, Any] | None = None, anchor: AnchorConfig | None = None, *,
              seed: int = 0, device: str = "cpu") -> AlignedModel:
    """A seeded, untrained encoder + head in the anchor's space: the chance-level control."""
    from modbind.model import build_aligned_model
    from modbind.plugins import get_registry

    registry = get_registry()
    encoder_plugin = registry.encoder(plugin)
    anchor = anchor or AnchorConfig()
    return build_aligned_model(encoder_plugin, encoder_plugin.options(dict(options or {})), anchor,
                               registry.anchor_provider(anchor.model), seed=seed, device=device)


def load_recipe(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Recipe:
    """A recipe YAML (the paper's defaults when None) with ``key.path=value`` overrides, validated."""
    from modbind.recipes import load_recipe as load

    return load(Path(path) if path is not None else None, overrides)


def align(recipe: Recipe | str | Path, overrides: Iterable[str] = (), *, resume: bool = False, extend: bool = False,
          progress: bool = True, on_step: Callable[[StepReport], None] | None = None) -> RunResult:
    """Train the recipe's plugin against its anchor (what ``modbind align`` runs), then its ``eval.suite``.

    ``resume`` continues the run in ``output.dir``; ``extend`` (with ``resume``) also lets the recipe raise
    ``train.epochs``/``train.max_steps`` to train a finished run further.
    """
    from modbind.plugins import get_registry
    from modbind.recipes import apply_overrides, resolve_recipe
    from modbind.workflow import align_and_evaluate

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        recipe = Recipe.model_validate(apply_overrides(recipe.model_dump(mode="json"), overrides))
    registry = get_registry()
    return align_and_evaluate(resolve_recipe(recipe, registry), registry, resume=resume, extend=extend,
                              progress=progress, on_step=on_step)


@dataclass
class Evaluation:
    """What :func:`evaluate` produced: one result per suite task and the report files."""

    results: list[TaskResult]
    files: dict[str, Path]


def evaluate(model: AlignedModel | AlignedBundle, suite: Suite | str | Path, out_dir: str | Path, *,
             languages: Sequence[str] | None = None, batch_size: int = 64, cache_dir: str | Path | None = None,
             progress: bool = True, model_path: str | Path | None = None,
             data_root: str | Path | None = None) -> Evaluation:
    """Run an evaluation suite (a :class:`modbind.Suite`, its YAML file or a shipped suite's name) on a model or
    bundle; writes the report.

    ``cache_dir`` keeps the frozen towers' embeddings between runs; ``model_path`` is recorded in the report;
    ``data_root`` is what ``${DATA_ROOT}`` in the suite's paths stands for.
    """
    from modbind.eval.embedder import Embedder
    from modbind.eval.suite import evaluate as run
    from modbind.suites import Suite, load_suite
    from modbind.plugins import get_registry

    plan = suite if isinstance(suite, Suite) else load_suite(suite, data_root)
    embedder = Embedder(model, batch_size=batch_size, progress=progress,
                        cache_dir=Path(cache_dir) if cache_dir is not None else None)
    trained = model.card.get("metrics", {}).get("trained", True)
    info = {"path": str(model_path) if model_path else None, "untrained": not trained, "card": model.card}
    results, files = run(embedder, plan, Path(out_dir), get_registry().eval_tasks, model_info=info,
                         languages=list(languages) if languages else None,
                         settings={"suite": plan.name or str(suite)})
    return Evaluation(results, files)
