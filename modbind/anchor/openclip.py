"""Finding and building an open_clip anchor from files already on disk, never from the network.

Every way a researcher keeps open_clip weights is resolved to *local files* first (an open_clip model
config, one weights file, the HF text-tower config folder and the tokenizer folder); only then is the
model built, through open_clip's own public factory (``create_model`` + ``load_checkpoint``). Accepted:

- an open_clip model name + pretrained tag (``xlm-roberta-base-ViT-B-32`` + ``laion5b_s13b_b90k``),
  looked up in the Hugging Face cache / open_clip's download folder;
- an open_clip model name + a local weights file (``pretrained: /path/open_clip_pytorch_model.bin``);
- ``hf-hub:org/repo`` (from the HF cache);
- ``local-dir:/path`` (``open_clip_config.json`` + weights in the folder, or a weights file given as
  ``pretrained``, which then overrides the folder's).

When something is missing, one :class:`AnchorWeightsMissing` names the model, the tag, every place
searched and the ``hf download`` commands that fetch it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from modbind.contracts import AnchorProvider
from modbind.errors import CheckpointError, ConfigError, did_you_mean, exception_reason

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
PREFERRED_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
"""open_clip's own preference order for the weights file inside a model folder."""
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "vocab.json", "vocab.txt")
OPEN_CLIP_PRECISION = {"fp32": "fp32", "bf16": "pure_bf16", "fp16": "pure_fp16"}
"""Recipe precision → open_clip's: whole-model casts, since its mixed "bf16" mode leaves HF text towers
half-converted (float activations meeting bf16 weights)."""
PRECISIONS = tuple(OPEN_CLIP_PRECISION)


class AnchorWeightsMissing(CheckpointError):
    """The anchor's files are not on disk (and modbind never downloads at run time)."""


@dataclass
class OpenClipSource:
    """Everything needed to build an anchor, as local paths; ``label``/``tag`` name it for humans."""

    label: str
    tag: str
    config_name: str
    """What ``open_clip.create_model`` reads the architecture from (built-in name or ``local-dir:``)."""
    model_cfg: dict[str, Any]
    weights: Path
    text_tower_dir: Path | None = None
    tokenizer_dir: Path | None = None
    preprocess_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer_kwargs(self) -> dict[str, Any]:
        return dict(self.model_cfg.get("text_cfg", {}).get("tokenizer_kwargs", {}))

    def content_files(self) -> list[Path]:
        """Files besides the weights whose content changes what the anchor computes (the vocabulary)."""
        if self.tokenizer_dir is None:
            return []
        return [self.tokenizer_dir / n for n in TOKENIZER_FILES if (self.tokenizer_dir / n).is_file()]


@dataclass
class _Search:
    """Collects what could not be found and where it was looked for, for one clear error."""

    model: str
    tag: str | None
    cache_dir: Path | None = None
    missing: list[str] = field(default_factory=list)
    looked: list[str] = field(default_factory=list)
    downloads: dict[str, list[str]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)

    def fetch(self, repo: str, files: list[str]) -> None:
        """Remember the files of an HF repo to fetch (one ``hf download`` command per repo)."""
        wanted = self.downloads.setdefault(repo, [])
        wanted.extend(f for f in files if f not in wanted)

    def fail(self) -> None:
        if not self.missing:
            return
        lines = [f"anchor '{self.model}'" + (f" (pretrained '{self.tag}')" if self.tag else "")
                 + " is not on disk (modbind never downloads at run time); missing: " + "; ".join(self.missing)]
        lines.append("looked in: " + ", ".join(dict.fromkeys(self.looked)))
        where = f" --cache-dir {self.cache_dir}" if self.cache_dir else ""
        fetch = [f"hf download {repo} {' '.join(files)}{where}" for repo, files in self.downloads.items()]
        fetch += self.commands
        if fetch:
            lines.append("fetch it while online with: " + "  &&  ".join(fetch))
        lines.append("or point anchor.model at a 'local-dir:' folder / anchor.pretrained at a weights file")
        raise AnchorWeightsMissing("\n".join(lines))


def resolve_openclip(model: str, pretrained: str | None, cache_dir: Path | None = None) -> OpenClipSource:
    """Resolve an anchor spec to local files, or raise one :class:`AnchorWeightsMissing` listing the gaps."""
    if model.startswith(LOCAL_DIR):
        return _resolve_local_dir(model, pretrained, cache_dir)
    if model.startswith(HF_HUB):
        return _resolve_hf_hub(model, pretrained, cache_dir)
    return _resolve_builtin(model, pretrained, cache_dir)


def _resolve_local_dir(model: str, pretrained: str | None, cache_dir: Path | None) -> OpenClipSource:
    folder = Path(model[len(LOCAL_DIR):]).expanduser().resolve()
    search = _Search(model, pretrained if _is_path_like(pretrained) else None, cache_dir)
    config = _read_open_clip_config(folder / OPEN_CLIP_CONFIG, search)
    search.fail()
    weights = _explicit_weights(pretrained, search) or _weights_in_folder(folder, search)
    model_cfg = config["model_cfg"]
    text_dir, tokenizer_dir = _resolve_text_side(model_cfg, folder, cache_dir, search)
    search.fail()
    assert weights is not None
    return OpenClipSource(
        label=f"local-dir:{folder.name}",
        tag=weights.name if search.tag else "local",
        config_name=f"{LOCAL_DIR}{folder}",
        model_cfg=model_cfg,
        weights=weights,
        text_tower_dir=text_dir,
        tokenizer_dir=tokenizer_dir,
    )


def _resolve_hf_hub(model: str, pretrained: str | None, cache_dir: Path | None) -> OpenClipSource:
    repo = model[len(HF_HUB):].strip("/")
    search = _Search(model, None, cache_dir)
    config_path = _cached_file(repo, OPEN_CLIP_CONFIG, cache_dir, search)
    if config_path is None:
        search.missing.append(f"{OPEN_CLIP_CONFIG} of {repo}")
        search.fetch(repo, [OPEN_CLIP_CONFIG, PREFERRED_WEIGHTS[0]])
        search.fail()
    assert config_path is not None
    folder = config_path.parent
    config = _read_open_clip_config(config_path, search)
    weights = _explicit_weights(pretrained, search)
    if weights is None:
        weights = _first_cached(repo, PREFERRED_WEIGHTS[:3], cache_dir, search)
        if weights is None:
            search.missing.append(f"weights of {repo} ({' or '.join(PREFERRED_WEIGHTS[:3])})")
            search.fetch(repo, [PREFERRED_WEIGHTS[0]])
    model_cfg = config.get("model_cfg", {})
    text_dir, tokenizer_dir = _resolve_text_side(model_cfg, folder, cache_dir, search)
    search.fail()
    assert weights is not None
    return OpenClipSource(
        label=model,
        tag=weights.name if _is_path_like(pretrained) else "hub",
        config_name=f"{LOCAL_DIR}{folder}",
        model_cfg=model_cfg,
        weights=weights,
        text_tower_dir=text_dir,
        tokenizer_dir=tokenizer_dir,
    )


def _resolve_builtin(model: str, pretrained: str | None, cache_dir: Path | None) -> OpenClipSource:
    import open_clip

    name = model.replace("/", "-")
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ConfigError(
            f"anchor.model '{model}' is not an open_clip model{did_you_mean(name, open_clip.list_models())}; "
            "use an open_clip name (python -c 'import open_clip; print(open_clip.list_models())'), "
            "'hf-hub:org/repo' or 'local-dir:/path'"
        )
    search = _Search(model, pretrained, cache_dir)
    preprocess: dict[str, Any] = {}
    weights = _explicit_weights(pretrained, search)
    if weights is None and not search.missing:
        if not pretrained:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ConfigError(
                f"anchor '{model}' needs anchor.pretrained: a tag ({', '.join(tags) or 'none known'}) "
                "or a weights file; an untrained anchor is meaningless"
            )
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ConfigError(
                f"anchor.pretrained '{pretrained}' is neither a known tag of '{name}'{did_you_mean(pretrained, tags)} "
                f"nor an existing file; known tags: {', '.join(tags) or 'none'}"
            )
        preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
        weights = _tag_weights(tag_cfg, cache_dir, search)
    text_dir, tokenizer_dir = _resolve_text_side(model_cfg, None, cache_dir, search)
    search.fail()
    assert weights is not None
    return OpenClipSource(
        label=name,
        tag=pretrained if not _is_path_like(pretrained) else weights.name,
        config_name=name,
        model_cfg=model_cfg,
        weights=weights,
        text_tower_dir=text_dir,
        tokenizer_dir=tokenizer_dir,
        preprocess_overrides=preprocess,
    )


def _tag_weights(tag_cfg: dict[str, Any], cache_dir: Path | None, search: _Search) -> Path | None:
    """Where open_clip would have downloaded a tag's weights: the HF cache, or its URL download folder."""
    if tag_cfg.get("file"):
        return _explicit_weights(tag_cfg["file"], search)
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        candidates = [filename]
        if filename.endswith((".bin", ".pth")):
            safe = "open_clip_model.safetensors" if filename == "open_clip_pytorch_model.bin" else filename[:-4] + ".safetensors"
            candidates.insert(0, safe)
        found = _first_cached(repo, candidates, cache_dir, search)
        if found is None:
            search.missing.append(f"weights file {filename} of {repo}")
            search.fetch(repo, [filename])
        return found
    url = tag_cfg.get("url", "")
    folder = Path(cache_dir) if cache_dir else Path("~/.cache/clip").expanduser()
    target = folder / os.path.basename(url)
    search.looked.append(str(folder))
    if target.is_file():
        return target
    search.missing.append(f"weights file {target.name}")
    search.commands.append(f"curl -L --create-dirs -o {target} {url}")
    return None


def _resolve_text_side(
    model_cfg: dict[str, Any], folder: Path | None, cache_dir: Path | None, search: _Search
) -> tuple[Path | None, Path | None]:
    """Local folders for the HF text tower's config and for the tokenizer (None: not an HF text tower)."""
    text_cfg = model_cfg.get("text_cfg", {})
    text_dir = tokenizer_dir = None
    if text_cfg.get("hf_model_name"):
        text_dir = _hf_folder(text_cfg["hf_model_name"], ("config.json",), folder, cache_dir, search, "text-tower config")
    if text_cfg.get("hf_tokenizer_name"):
        if folder is not None and _has_any(folder, TOKENIZER_FILES):
            tokenizer_dir = folder  # open_clip's rule: a model folder's own tokenizer wins
        else:
            tokenizer_dir = _hf_folder(text_cfg["hf_tokenizer_name"], TOKENIZER_FILES, folder, cache_dir, search, "tokenizer")
    return text_dir, tokenizer_dir


def _hf_folder(
    name: str, needed: tuple[str, ...], folder: Path | None, cache_dir: Path | None, search: _Search, what: str
) -> Path | None:
    """A local folder holding one of ``needed`` for an HF name: a path (relative to ``folder``) or the HF cache."""
    as_path = Path(name).expanduser()
    candidates = [as_path] if as_path.is_absolute() else ([folder / as_path] if folder else []) + [as_path]
    if as_path.is_absolute() and folder is not None:
        candidates.append(folder)  # the model folder was moved since its config was written
    for candidate in candidates:
        if candidate.is_dir() and _has_any(candidate, needed):
            return candidate.resolve()
    if as_path.is_absolute() or name.startswith((".", "~")):
        search.looked.extend(str(c) for c in candidates)
        search.missing.append(f"{what} folder {name}")
        return None
    repos = [name] + ([f"FacebookAI/{name}"] if "/" not in name and name.startswith("xlm-roberta") else [])
    for repo in repos:
        found = _first_cached(repo, needed, cache_dir, search)
        if found is not None:
            return found.parent
    search.missing.append(f"{what} of {name}")
    files = ["config.json"] if needed == ("config.json",) else ["tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model"]
    search.fetch(name, files)
    return None


def _read_open_clip_config(path: Path, search: _Search) -> dict[str, Any]:
    search.looked.append(str(path.parent))
    if not path.is_file():
        search.missing.append(f"{path.name} in {path.parent}")
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); re-create the model folder") from None
    if "model_cfg" not in config:
        raise CheckpointError(f"{path}: no 'model_cfg' section, so it is not an open_clip model config")
    return config


def _weights_in_folder(folder: Path, search: _Search) -> Path | None:
    for name in PREFERRED_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    others = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if others:
        return sorted(others, key=lambda p: p.suffix != ".safetensors")[0]
    search.missing.append(f"a weights file ({PREFERRED_WEIGHTS[0]}) in {folder}")
    return None


def _explicit_weights(pretrained: str | None, search: _Search) -> Path | None:
    """``pretrained`` as a weights file path, when it looks like one (a tag returns None)."""
    if not _is_path_like(pretrained):
        return None
    assert pretrained is not None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path.resolve()
    search.looked.append(str(path))
    search.missing.append(f"weights file {path} does not exist")
    return None


def _is_path_like(value: str | None) -> bool:
    if not value:
        return False
    return os.sep in value or "/" in value or value.endswith(WEIGHT_SUFFIXES) or Path(value).expanduser().is_file()


def _has_any(folder: Path, names: tuple[str, ...]) -> bool:
    return any((folder / n).is_file() for n in names)


def _cache_dirs(cache_dir: Path | None) -> list[Path | None]:
    """The caller's cache first, then the default HF cache (None = huggingface_hub's default)."""
    return [Path(cache_dir).expanduser(), None] if cache_dir else [None]


def _cached_file(repo: str, filename: str, cache_dir: Path | None, search: _Search) -> Path | None:
    """A file of an HF repo from the local cache only (``try_to_load_from_cache`` never touches the network)."""
    from huggingface_hub import constants, try_to_load_from_cache

    for folder in _cache_dirs(cache_dir):
        search.looked.append(str(folder or constants.HF_HUB_CACHE))
        found = try_to_load_from_cache(repo, filename, cache_dir=str(folder) if folder else None)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _first_cached(repo: str, filenames: tuple[str, ...] | list[str], cache_dir: Path | None, search: _Search) -> Path | None:
    for filename in filenames:
        found = _cached_file(repo, filename, cache_dir, search)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------------------------- build


def build_openclip(source: OpenClipSource, device: str = "cpu", precision: str = "fp32") -> tuple[Any, Any, Any]:
    """``(model, tokenizer, image_transform)`` from local files through open_clip's public factory."""
    import open_clip
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2

    if precision not in PRECISIONS:
        raise ConfigError(f"anchor.precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    overrides: dict[str, Any] = {}
    text_cfg = dict(source.model_cfg.get("text_cfg", {}))
    if source.text_tower_dir is not None:
        overrides["text_cfg"] = {**text_cfg, "hf_model_name": str(source.text_tower_dir), "hf_model_pretrained": False}
    with quiet_open_clip():
        model = open_clip.create_model(
            source.config_name,
            load_weights=False,
            pretrained_image=False,
            pretrained_text=False,
            precision=OPEN_CLIP_PRECISION[precision],
            device=torch.device(device),
            force_preprocess_cfg=source.preprocess_overrides or None,
            **overrides,
        )
        try:
            open_clip.load_checkpoint(model, str(source.weights), strict=True, weights_only=True)
        except (RuntimeError, KeyError, ValueError, OSError) as err:
            raise CheckpointError(
                f"{source.weights}: does not fit anchor '{source.label}' ({exception_reason(err)}); "
                "check that anchor.model names the architecture these weights were trained with"
            ) from None
    tokenizer = _tokenizer(source, text_cfg)
    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    return model, tokenizer, transform


def _tokenizer(source: OpenClipSource, text_cfg: dict[str, Any]) -> Any:
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    context_length = text_cfg.get("context_length", 77)
    if source.tokenizer_dir is not None:
        return HFTokenizer(str(source.tokenizer_dir), context_length=context_length, **source.tokenizer_kwargs)
    return open_clip.get_tokenizer(source.config_name, context_length=context_length)


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[None]:
    """open_clip logs routine INFO/WARNING lines through the root logger while building; hide them."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


class OpenClipProvider(AnchorProvider):
    """The built-in anchor provider: any open_clip model, loaded offline from local files."""

    name: ClassVar[str] = "open_clip"

    def handles(self, model: str) -> bool:
        if model.startswith((LOCAL_DIR, HF_HUB)):
            return True
        import open_clip

        return model.replace("/", "-") in open_clip.list_models()

    def pretrained_in_use(self, model: str, pretrained: str | None) -> str | None:
        """``hf-hub:`` and ``local-dir:`` models take their weights from the repo/folder: a tag is ignored (None);
        a weights file still overrides them."""
        if model.startswith((LOCAL_DIR, HF_HUB)) and not _is_path_like(pretrained):
            return None
        return pretrained

    def known_models(self) -> list[str]:
        import open_clip

        return list(open_clip.list_models())

    def load(self, model: str, pretrained: str | None, **kwargs: Any) -> Any:
        """An :class:`modbind.anchor.Anchor`; kwargs: ``cache_dir``, ``device``, ``precision``."""
        from modbind.anchor.anchor import Anchor

        source = resolve_openclip(model, pretrained, kwargs.get("cache_dir"))
        precision = kwargs.get("precision", "fp32")
        device = kwargs.get("device", "cpu")
        net, tokenizer, transform = build_openclip(source, device, precision)
        return Anchor(
            net,
            tokenizer,
            transform,
            identity=self.identity(model, pretrained, _source=source, **kwargs),
            label=f"{source.label} ({source.tag})",
            device=device,
        )

    def identity(self, model: str, pretrained: str | None, *, _source: OpenClipSource | None = None, **kwargs: Any) -> str:
        """``sha256:…`` of what the anchor computes with, without building it (hashes files only).

        Only content counts: the weights, the embedding width, the tokenizer files and the precision. Moving
        or renaming a ``local-dir:`` folder, or reaching the same weights by tag or by path, keeps the
        identity, so caption caches and exported models still match.
        """
        import hashlib

        from modbind.anchor.fingerprint import file_sha256

        source = _source or resolve_openclip(model, pretrained, kwargs.get("cache_dir"))
        digest = hashlib.sha256()
        digest.update(file_sha256(source.weights).encode())
        digest.update(json.dumps(source.model_cfg.get("embed_dim")).encode())
        for path in source.content_files():
            digest.update(path.name.encode() + file_sha256(path).encode())
        precision = kwargs.get("precision", "fp32")
        suffix = "" if precision == "fp32" else f"|{precision}"
        return f"sha256:{digest.hexdigest()[:24]}{suffix}"
