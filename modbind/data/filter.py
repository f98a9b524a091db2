"""CLIP-similarity filtering (the paper's "f 0.1 / f 0.2" training sets): drop the lowest-scoring pairs.

Every (clip, caption) pair of a training manifest gets a similarity score from a scorer, and exactly
``round(drop × scored pairs)`` of the lowest-scoring pairs are removed (ties broken by manifest order, so
the result is deterministic). Scorers:

* :class:`AudioCaptionScorer`: cosine between an aligned model's clip and caption embeddings
  (an exported modbind model: ``encode`` / ``encode_text``).
* :class:`CaptionConsistencyScorer`: text tower only; a caption is scored against the other captions of
  its clip (or, for one-caption clips, the source's title/description/tags kept in ``meta``).

Scores are appended to a side file after every batch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from modbind.atomic import atomic_path
from modbind.data.manifest import ManifestEntry
from modbind.data.paths import resolve_under
from modbind.errors import DataError

REFERENCE_META_KEYS = ("title", "description", "tags", "keywords")


class EntryScorer(Protocol):
    """Scores every caption (in ``language``) of each entry; NaN where a pair cannot be scored."""

    identity: str

    def score_entries(self, entries: Sequence[ManifestEntry], language: str) -> list[list[float]]: ...


def _normalise(matrix: Any) -> np.ndarray:
    array = np.asarray(matrix.detach().cpu().float().numpy() if hasattr(matrix, "detach") else matrix,
                       dtype=np.float64)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


class AudioCaptionScorer:
    """Cosine similarity of (clip, caption) under an aligned model (``modbind.load(...)``)."""

    def __init__(self, model: Any, root: Path, identity: str, batch_size: int = 32, *,
                 allow_absolute_paths: bool = False):
        self.model, self.root, self.identity, self.batch_size = model, Path(root), identity, batch_size
        self.allow_absolute_paths = allow_absolute_paths

    def score_entries(self, entries: Sequence[ManifestEntry], language: str) -> list[list[float]]:
        clips = self._encode_clips(entries)
        texts = [c for e in entries for c in e.captions.get(language, [])]
        captions = _normalise(self.model.encode_text(texts)) if texts else np.zeros((0, 1))
        scores, offset = [], 0
        for k, entry in enumerate(entries):
            n = len(entry.captions.get(language, []))
            block = captions[offset : offset + n]
            offset += n
            scores.append([float("nan")] * n if clips[k] is None else [float(v) for v in block @ clips[k]])
        return scores

    def _encode_clips(self, entries: Sequence[ManifestEntry]) -> list[np.ndarray | None]:
        paths = [resolve_under(self.root, e.path, where=e.where(), allow_absolute=self.allow_absolute_paths)
                 for e in entries]
        try:
            return list(_normalise(self.model.encode(paths, batch_size=self.batch_size)))
        except DataError:
            pass  # one bad file: encode one by one so only that clip goes unscored
        out: list[np.ndarray | None] = []
        for path in paths:
            try:
                out.append(_normalise(self.model.encode([path], batch_size=1))[0])
            except DataError:
                out.append(None)
        return out


class CaptionConsistencyScorer:
    """Caption–caption similarity with a text tower: how well a caption agrees with its clip's other texts."""

    def __init__(self, encode_text: Callable[[list[str]], Any], identity: str):
        self.encode_text, self.identity = encode_text, identity

    def score_entries(self, entries: Sequence[ManifestEntry], language: str) -> list[list[float]]:
        texts: list[str] = []
        plans: list[tuple[list[int], list[int]]] = []
        for entry in entries:
            captions = entry.captions.get(language, [])
            own = list(range(len(texts), len(texts) + len(captions)))
            texts.extend(captions)
            references = reference_texts(entry) if len(captions) == 1 else []
            refs = list(range(len(texts), len(texts) + len(references)))
            texts.extend(references)
            plans.append((own, refs))
        vectors = _normalise(self.encode_text(texts)) if texts else np.zeros((0, 1))
        scores = []
        for own, refs in plans:
            row = []
            for i in own:
                others = refs if refs else [j for j in own if j != i]
                if not others:
                    row.append(float("nan"))
                    continue
                centre = vectors[others].mean(axis=0)
                centre /= max(np.linalg.norm(centre), 1e-12)
                row.append(float(vectors[i] @ centre))
            scores.append(row)
        return scores


def reference_texts(entry: ManifestEntry) -> list[str]:
    """Source metadata a lone caption can be checked against (WavCaps title/description/tags, keywords)."""
    found = []
    for key in REFERENCE_META_KEYS:
        value = entry.meta.get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if isinstance(value, str) and value.strip():
            found.append(value.strip())
    return found


@dataclass
class FilterResult:
    entries: list[ManifestEntry]
    scores: list[float]
    threshold: float | None
    total_pairs: int
    kept_pairs: int
    unscored_pairs: int
    dropped_entries: int
    summary_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        cut = f"{self.threshold:.4f}" if self.threshold is not None else "n/a"
        return (f"kept {self.kept_pairs} of {self.total_pairs - self.unscored_pairs} scored pairs (score >= {cut}); "
                f"{self.unscored_pairs} pairs could not be scored and were kept; "
                f"{self.dropped_entries} clips lost all their captions and were removed")


def keep_count(scored: int, drop: float) -> int:
    """How many of ``scored`` pairs survive dropping the fraction ``drop`` (round half up)."""
    if not 0.0 <= drop < 1.0:
        raise DataError(f"--drop must be in [0, 1) (got {drop})")
    return scored - int(math.floor(drop * scored + 0.5))


def entry_key(entry: ManifestEntry, language: str) -> str:
    """Resume key: the id plus a hash of the captions, so edited captions are scored again."""
    digest = hashlib.sha1(json.dumps(entry.captions.get(language, []), ensure_ascii=False).encode()).hexdigest()[:16]
    return f"{entry.id}\t{digest}"


def score_manifest(
    entries: Sequence[ManifestEntry],
    scorer: EntryScorer,
    scores_path: Path,
    *,
    language: str = "en",
    batch_size: int = 64,
    progress: bool = True,
) -> list[list[float]]:
    """Scores of every entry's captions, resuming from (and appending to) ``scores_path``."""
    done = _load_scores(scores_path, scorer.identity, language)
    todo = [k for k, e in enumerate(entries) if entry_key(e, language) not in done and e.captions.get(language)]
    scores_path.parent.mkdir(parents=True, exist_ok=True)
    with scores_path.open("a", encoding="utf-8") as handle, tqdm(
        total=len(todo), desc="scoring pairs", unit="clip", disable=not progress
    ) as bar:
        if scores_path.stat().st_size == 0:
            handle.write(json.dumps({"scorer": scorer.identity, "language": language}) + "\n")
        for start in range(0, len(todo), batch_size):
            batch = [entries[k] for k in todo[start : start + batch_size]]
            for entry, row in zip(batch, scorer.score_entries(batch, language)):
                key = entry_key(entry, language)
                done[key] = row
                handle.write(json.dumps({"key": key, "scores": [None if math.isnan(s) else s for s in row]}) + "\n")
            handle.flush()
            bar.update(len(batch))
    return [done.get(entry_key(e, language), []) if e.captions.get(language) else [] for e in entries]


def _load_scores(path: Path, identity: str, language: str) -> dict[str, list[float]]:
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0]) if lines else {}
    if header.get("scorer") != identity or header.get("language") != language:
        raise DataError(
            f"{path} holds scores from scorer {header.get('scorer')!r} ({header.get('language')}), not {identity!r} "
            f"({language}); delete it or pass --restart to score from scratch"
        )
    done = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interruption: that batch is scored again
        done[record["key"]] = [float("nan") if s is None else float(s) for s in record["scores"]]
    return done


def select_pairs(entries: Sequence[ManifestEntry], scores: Sequence[Sequence[float]], drop: float,
                 language: str = "en") -> FilterResult:
    """Keep the highest-scoring ``1 - drop`` of scored pairs; unscorable pairs are kept and counted."""
    ranked = [(-s, k, j) for k, row in enumerate(scores) for j, s in enumerate(row) if not math.isnan(s)]
    total = sum(len(e.captions.get(language, [])) for e in entries)
    unscored = total - len(ranked)
    ranked.sort()
    kept = ranked[: keep_count(len(ranked), drop)]
    keep: dict[int, set[int]] = {}
    for _, k, j in kept:
        keep.setdefault(k, set()).add(j)
    for k, row in enumerate(scores):
        for j, s in enumerate(row):
            if math.isnan(s):
                keep.setdefault(k, set()).add(j)
    out, dropped = [], 0
    for k, entry in enumerate(entries):
        n = len(entry.captions.get(language, []))
        if n == 0:
            out.append(entry)
            continue
        indices = sorted(keep.get(k, ()))
        if not indices:
            dropped += 1
            continue
        out.append(entry if len(indices) == n else _restrict(entry, indices, n, language))
    flat = [-neg for neg, _, _ in ranked]
    return FilterResult(out, flat, -kept[-1][0] if kept else None, total, len(kept), unscored, dropped)


def _restrict(entry: ManifestEntry, indices: list[int], n: int, language: str) -> ManifestEntry:
    """The entry with only the kept captions; aligned translations and caption ids follow."""
    captions = {lang: ([texts[i] for i in indices] if len(texts) == n else texts)
                for lang, texts in entry.captions.items()}
    meta = dict(entry.meta)
    ids = meta.get("caption_ids")
    if isinstance(ids, list) and len(ids) == n:
        meta["caption_ids"] = [ids[i] for i in indices]
    return entry.model_copy(update={"captions": captions, "meta": meta})


def plot_histogram(scores: Sequence[float], threshold: float | None, drop: float, path: Path) -> None:
    """Histogram of pair scores with the cut marked, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(np.asarray(scores, dtype=float), bins=min(60, max(10, len(scores) // 20)), color="#4c72b0")
    if threshold is not None:
        axes.axvline(threshold, color="#c44e52", linestyle="--", label=f"cut at {threshold:.3f} (drop {drop:.0%})")
        axes.legend()
    axes.set_xlabel("similarity score")
    axes.set_ylabel("pairs")
    axes.set_title(f"{len(scores)} scored pairs")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
