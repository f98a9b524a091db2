"""LAION-CLAP's own training step, served to ``bench_train.py`` (its ``peer`` row).

Runs in its own environment (``laion_clap`` pins numpy < 2, which the project's environment does not
have; see benchmarks/README.md), started by the driver with ``--peer-python``. It speaks
``bench_protocol``'s line protocol and never imports modbind.

The step is ``laion_clap.training.train.train_one_epoch``'s, for one batch: HTS-AT (``HTSAT-tiny``, the
AudioSet Swin-T) on 10 s of 48 kHz audio with its own mel front-end on the device, the RoBERTa-base
text tower on 77 tokens per caption, ClipLoss, AdamW over LAION-CLAP's parameter groups (no weight
decay on gains and biases), the logit-scale clamp. Weights are random: RoBERTa is built from its
config instead of ``from_pretrained('roberta-base')``, so nothing is downloaded. Tokenisation runs in
LAION-CLAP's data workers, so the batch arrives as token ids (random ones here). bf16 runs the
forward under ``torch.autocast`` (LAION-CLAP's own ``amp`` is fp16 with a GradScaler).

    python benchmarks/bench_peer_clap.py --worker '{"batch": 2, "seconds": 10, "device": "cpu", ...}'
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from bench_protocol import serve

SAMPLE_RATE = 48000
CONTEXT = 77


def clap_module_path() -> Path:
    """laion_clap's package folder, without importing it (its __init__ fetches tokenizers from the Hub)."""
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or spec.origin is None:
        sys.exit("laion_clap is not installed in this environment (see benchmarks/README.md)")
    return Path(spec.origin).parent


def build(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    sys.path.insert(0, str(clap_module_path()))  # how laion_clap itself imports clap_module
    import transformers
    from clap_module import create_model
    from clap_module.loss import ClipLoss
    from clap_module.utils import get_optimizer

    def random_init(cls: type, name: str, *args: Any, **kwargs: Any) -> Any:
        return cls(transformers.RobertaConfig())  # roberta-base sizes, random weights, no download

    transformers.RobertaModel.from_pretrained = classmethod(random_init)
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model, _ = create_model("HTSAT-tiny", "roberta", pretrained="", precision="fp32", device=device,
                            enable_fusion=False, fusion_type="None")
    model.train()
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if exclude(n, p) and p.requires_grad], "weight_decay": 0.0},
              {"params": [p for n, p in named if not exclude(n, p) and p.requires_grad], "weight_decay": 0.2}]
    optimizer = get_optimizer(groups, lr=1e-4, betas=(0.9, 0.99), eps=1e-9, momentum=0.9, optimizer_name="adamw")
    return model, optimizer, ClipLoss(mlp_loss=False, cache_labels=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", required=True, help="JSON spec from bench_train.py")
    spec = json.loads(parser.parse_args().worker)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(spec["device"])
    model, optimizer, loss_fn = build(spec)
    batch = spec["batch"]
    g = torch.Generator().manual_seed(0)
    audio = {"waveform": (0.1 * torch.randn(batch, int(spec["seconds"] * SAMPLE_RATE), generator=g)).to(device),
             "longer": torch.zeros(batch, dtype=torch.bool, device=device)}
    text = {"input_ids": torch.randint(3, 50000, (batch, CONTEXT), generator=g).to(device),
            "attention_mask": torch.ones(batch, CONTEXT, dtype=torch.long, device=device)}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["precision"] == "bf16")

    def step() -> None:
        optimizer.zero_grad()
        with autocast:
            audio_features, text_features, _, _, logit_scale_a, _ = model(audio, text, device)
            total = loss_fn(audio_features=audio_features, text_features=text_features, logit_scale_a=logit_scale_a)
        total.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale_a.clamp_(0, math.log(100))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def finish() -> dict[str, float]:
        if device.type == "cuda":
            return {"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20}
        return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    serve(step, sync, {"finish": finish}, ready={"parameters": sum(p.numel() for p in model.parameters()),
                                                 "numpy": __import__("numpy").__version__})


if __name__ == "__main__":
    main()
