"""A tiny but real open_clip anchor, built on the fly for tests and the demo.

It is a genuine open_clip ``CustomTextCLIP``: a small ViT image tower and a small XLM-R-configured
Hugging Face text tower whose subword tokenizer is trained on the caller's sentences. It is written as an
open_clip ``local-dir:`` folder (``open_clip_config.json`` + ``open_clip_model.safetensors`` + the HF text
config and tokenizer), so it loads through exactly the same path as the real anchor, with no network.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modbind.atomic import atomic_path, write_json_atomic
from modbind.errors import ConfigError, did_you_mean

OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
"""XLM-R's special-token order, so ids 0..3 mean what they mean in the real model (pad = 1)."""

DEFAULT_SIZES: dict[str, int] = {
    "vocab_size": 512,
    "context_length": 32,
    "text_width": 32,
    "text_layers": 2,
    "text_heads": 2,
    "image_size": 32,
    "patch_size": 8,
    "vision_width": 32,
    "vision_layers": 2,
    "vision_head_width": 16,
}
"""Default tower sizes; ``vocab_size`` is the budget of learned subwords (256 byte tokens come on top)."""

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def build_tiny_openclip(
    out_dir: Path, texts: list[str], *, embed_dim: int = 32, seed: int = 0, **sizes: int
) -> Path:
    """Write a randomly initialised tiny open_clip model to ``out_dir`` and return that folder.

    Load it with ``AnchorConfig(model=f"local-dir:{out_dir}")``. ``sizes`` overrides
    :data:`DEFAULT_SIZES` (e.g. ``text_layers=1``). The folder is built beside ``out_dir`` and renamed
    into place, so a crash never leaves a half-written model behind.
    """
    dims = _resolve_sizes(sizes)
    if not any(t.strip() for t in texts):
        raise ConfigError("build_tiny_openclip needs at least one non-empty sentence to train its tokenizer")
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tokenizer = train_subword_tokenizer(texts, dims["vocab_size"], dims["context_length"])
        tokenizer.save_pretrained(str(staging))
        _xlmr_config(len(tokenizer), dims).save_pretrained(str(staging))
        model_cfg = _open_clip_model_cfg(staging, embed_dim, dims)
        write_json_atomic(staging / OPEN_CLIP_CONFIG, model_cfg)
        model = _random_model(staging, seed)
        save_openclip_weights(model, staging)
        # Point the text tower at the final location before the folder moves there.
        model_cfg["model_cfg"]["text_cfg"]["hf_model_name"] = str(out_dir)
        model_cfg["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = str(out_dir)
        write_json_atomic(staging / OPEN_CLIP_CONFIG, model_cfg)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def train_subword_tokenizer(texts: Iterable[str], vocab_size: int, context_length: int) -> Any:
    """A SentencePiece-style BPE tokenizer (``▁`` word marks, NFKC) trained on ``texts``.

    Byte fallback means scripts absent from ``texts`` still get distinct tokens instead of ``<unk>``,
    so Latin, Cyrillic and CJK (and anything else) all tokenize. Returns a transformers fast tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    trainer = trainers.BpeTrainer(
        vocab_size=len(SPECIAL_TOKENS) + vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tokenizer.train_from_iterator([t for t in texts if t.strip()], trainer)
    tokenizer = _with_byte_tokens(tokenizer)
    tokenizer.add_special_tokens(["<mask>"])
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
        model_max_length=context_length,
    )


def save_openclip_weights(model: nn.Module, out_dir: Path) -> Path:
    """Write ``model``'s state dict as ``out_dir/open_clip_model.safetensors`` (temp file + rename).

    The demo uses this to store a tiny anchor it trained further; open_clip's ``local-dir:`` loader
    picks the file up by name.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    target = out_dir / WEIGHTS_FILE
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "written_by": "modbind.anchor.tiny"})
    return target


def _resolve_sizes(sizes: dict[str, int]) -> dict[str, int]:
    unknown = [k for k in sizes if k not in DEFAULT_SIZES]
    if unknown:
        name = unknown[0]
        raise ConfigError(
            f"build_tiny_openclip: unknown size '{name}'{did_you_mean(name, DEFAULT_SIZES)}; "
            f"valid: {', '.join(DEFAULT_SIZES)}"
        )
    dims = {**DEFAULT_SIZES, **sizes}
    if dims["text_width"] % dims["text_heads"]:
        raise ConfigError(f"text_width {dims['text_width']} must be divisible by text_heads {dims['text_heads']}")
    if dims["image_size"] % dims["patch_size"]:
        raise ConfigError(f"image_size {dims['image_size']} must be divisible by patch_size {dims['patch_size']}")
    return dims


def _with_byte_tokens(tokenizer: Any) -> Any:
    """Add the 256 ``<0xNN>`` tokens byte fallback needs to the trained BPE vocabulary."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    return Tokenizer.from_str(json.dumps(spec))


def _xlmr_config(vocab_size: int, dims: dict[str, int]) -> Any:
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=dims["text_width"],
        num_hidden_layers=dims["text_layers"],
        num_attention_heads=dims["text_heads"],
        intermediate_size=4 * dims["text_width"],
        # XLM-R numbers positions from pad_token_id + 1, so the table needs two extra rows.
        max_position_embeddings=dims["context_length"] + 2,
        type_vocab_size=1,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    )


def _open_clip_model_cfg(text_dir: Path, embed_dim: int, dims: dict[str, int]) -> dict[str, Any]:
    return {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": {
                "image_size": dims["image_size"],
                "patch_size": dims["patch_size"],
                "width": dims["vision_width"],
                "layers": dims["vision_layers"],
                "head_width": dims["vision_head_width"],
            },
            "text_cfg": {
                "hf_model_name": str(text_dir),
                "hf_tokenizer_name": str(text_dir),
                "hf_pooler_type": "mean_pooler",
                "context_length": dims["context_length"],
            },
        },
        "preprocess_cfg": {
            "mean": list(OPENAI_MEAN),
            "std": list(OPENAI_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }


def _random_model(model_dir: Path, seed: int) -> nn.Module:
    """Instantiate the architecture through open_clip with a private RNG (global RNG untouched)."""
    import open_clip

    from modbind.anchor.openclip import quiet_open_clip

    with torch.random.fork_rng(devices=[]), quiet_open_clip():
        torch.manual_seed(seed)
        return open_clip.create_model(f"local-dir:{model_dir}", load_weights=False, pretrained_text=False)


