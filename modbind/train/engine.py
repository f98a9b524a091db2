"""The one place that talks to DeepSpeed: process group, engine config, step, checkpoints.

The rest of the trainer sees :class:`Engine` only, so swapping the backend touches this file alone.
One CPU process works without a launcher (the env a launcher would set is filled in); under
``deepspeed`` or ``torchrun`` the launcher's env is used as is.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine
from torch import nn

from modbind.atomic import atomic_write, fsync_dir, fsync_tree
from modbind.checkpoint_io import load_pickle
from modbind.config import TrainConfig
from modbind.errors import CheckpointError, ConfigError, ModbindError
from modbind.train.checkpoints import LATEST_FILE, complete_checkpoint, latest_tag, prune_checkpoints


def init_distributed() -> tuple[int, int, torch.device]:
    """Join (or create) the process group; returns (rank, world size, this rank's device)."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    accelerator = get_accelerator()
    on_cpu = accelerator.device_name() == "cpu"
    if on_cpu:
        _skip_shared_memory_allreduce()
    if not dist.is_initialized():
        if "RANK" not in os.environ:  # no launcher: a single local process
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1")
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(free_port()))
        deepspeed.init_distributed(dist_backend="gloo" if on_cpu else accelerator.communication_backend_name(),
                                   verbose=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu") if on_cpu else torch.device(accelerator.device_name(local_rank))
    if not on_cpu:
        accelerator.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), device


def _skip_shared_memory_allreduce() -> None:
    """Keep DeepSpeed's CPU backend from building and starting its shared-memory all-reduce op.

    On a CPU, DeepSpeed JIT-compiles ``deepspeed_shm_comm`` when its process group starts (minutes, with a
    C++ compiler, on a first run), and every rank then creates a 66 MB ``/dev/shm/deepspeed_allreduce_buffer_*``
    segment that nothing ever unlinks. The op serves only ``inference_all_reduce`` (tensor-parallel inference
    kernels); training's collectives go through torch.distributed (gloo), so marking the op unavailable in
    DeepSpeed's table of compatible ops (kept in ``deepspeed.ops`` for such edits) changes nothing in
    training, builds nothing and leaves no segment behind.

    The table is filled lazily by probing every op, which runs compiler test programs (e.g. linking against
    libaio); the shared-memory op is the only entry DeepSpeed reads on the paths modbind uses, so an
    unprobed table holding just that entry avoids invoking a compiler at all. Ops absent from it count as
    unavailable, which is what a CPU training run needs.
    """
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    vars(deepspeed.ops).setdefault("__compatible_ops__", {})[ShareMemCommBuilder.NAME] = False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def micro_batch_size(train: TrainConfig, world: int) -> int:
    """Per-rank micro batch; the global batch must split evenly over ranks and accumulation steps."""
    per_step = train.gradient_accumulation * world
    if train.batch_size % per_step:
        raise ConfigError(
            f"train.batch_size {train.batch_size} does not split over {world} rank(s) × "
            f"{train.gradient_accumulation} accumulation step(s); pick a multiple of {per_step}"
        )
    return train.batch_size // per_step


def fused_adam_supported(device_type: str) -> bool:
    """torch's fused Adam kernel exists for CUDA (torch 2.0+) and the CPU (2.4+)."""
    return device_type == "cuda" or (device_type == "cpu" and torch.__version__ >= "2.4")


def compiles(train: TrainConfig, device_type: str) -> bool:
    """Whether the model runs through torch.compile: ``train.compile``, where ``auto`` means on CUDA."""
    return train.compile is True or (train.compile == "auto" and device_type == "cuda")


def deepspeed_config(train: TrainConfig, world: int, total_steps: int, device_type: str = "cpu") -> dict[str, Any]:
    """The DeepSpeed JSON config for a recipe: Adam, warm-up + cosine max→min LR, clipping, precision, ZeRO."""
    opt = train.optimizer
    warmup = min(opt.warmup_steps, max(total_steps - 1, 1))
    fused = fused_adam_supported(device_type)
    config: dict[str, Any] = {
        "train_batch_size": train.batch_size,
        "train_micro_batch_size_per_gpu": micro_batch_size(train, world),
        "gradient_accumulation_steps": train.gradient_accumulation,
        "optimizer": {
            "type": "Adam",
            # torch's Adam (L2 weight decay, as the paper's Adam) on the float32 weights: no compiled op
            # needed on any device. fused: one kernel per update step, where torch has it (5× faster than
            # the per-tensor loop for BEATs-base on the CPU, where foreach is slower still: its
            # weight-decay add allocates a copy of every gradient); else foreach, one op per step.
            "params": {"lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps, "weight_decay": opt.weight_decay,
                       "torch_adam": True, "adam_w_mode": False, "fused": fused, "foreach": not fused},
        },
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": max(total_steps, 1),
                "warmup_num_steps": max(warmup, 1),
                "warmup_min_ratio": 0.0 if warmup > 0 else 1.0,
                "warmup_type": "linear",
                "cos_min_ratio": opt.min_lr / opt.lr,
            },
        },
        # ZeRO 1-2 and fp16 clip inside DeepSpeed's optimizer; stage 0 clips in Engine.step (own_clipping)
        "gradient_clipping": 0.0 if own_clipping(train) else (opt.grad_clip or 0.0),
        "zero_optimization": {"stage": train.zero_stage},
        # bf16 = float32 weights, gradients and Adam state with the forward under torch.autocast. DeepSpeed's
        # own "bf16" mode keeps bf16 weights, accumulates gradients in bf16 without ZeRO, and checks every
        # gradient for overflow with a host sync per tensor (~250 per BEATs step, 7 % on an H200).
        "torch_autocast": {"enabled": train.precision == "bf16", "dtype": "bfloat16"},
        "fp16": {"enabled": train.precision == "fp16", "initial_scale_power": 16},
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }
    return config


def own_clipping(train: TrainConfig) -> bool:
    """Whether :class:`Engine` clips the gradients itself: ZeRO stage 0 without fp16 loss scaling.

    DeepSpeed's stage-0 clipping takes a norm and a multiply per tensor (about 500 kernel launches for
    BEATs-base) plus a collective; ``torch.nn.utils.clip_grad_norm_`` does the same arithmetic (coefficient
    max_norm / (norm + 1e-6), at most 1) in a few fused kernels. The gradients are already averaged over
    the ranks by then, so every rank computes the same norm without communicating.
    """
    return bool(train.optimizer.grad_clip) and train.zero_stage == 0 and train.precision != "fp16"


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters only; biases, norms and the temperature get no weight decay (as in CLIP)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and "log_logit_scale" not in name else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class Engine:
    """A DeepSpeed engine around the trainable model, exposing only what the training loop needs."""

    def __init__(self, model: nn.Module, train: TrainConfig, world: int, total_steps: int):
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        device_type = get_accelerator().device_name()
        self.config = deepspeed_config(train, world, total_steps, device_type)
        self.train_config, self.world = train, world
        self.keep_checkpoints = train.keep_checkpoints
        groups = parameter_groups(model, train.optimizer.weight_decay)
        if not groups:
            raise ConfigError("nothing to train: every parameter is frozen (check train.finetune / partial_top_k)")
        try:
            self._engine, _, _, self._scheduler = deepspeed.initialize(model=model, model_parameters=groups,
                                                                       config=self.config)
            if compiles(train, device_type):
                mode = {} if train.compile_mode == "default" else {"mode": train.compile_mode}
                # in place: state-dict keys are unchanged
                self._engine.compile(backend=train.compile_backend, compile_kwargs=mode)
        except ModbindError:
            raise
        except Exception as err:  # whatever DeepSpeed or torch raise, the user gets one line
            raise ConfigError(f"DeepSpeed could not set up training ({type(err).__name__}: {_first_line(err)}); "
                              "check the recipe's train section") from err
        # resuming reads these files back: never with an unpickler that can run code (see SafeCheckpointEngine)
        self._engine.checkpoint_engine = SafeCheckpointEngine(self._engine._config)
        self._zero_unused_gradients: list[nn.Parameter] = []
        if world == 1 and train.zero_stage == 0:
            # one rank: the bucketed all-reduce would only flatten and copy every gradient. It also gives a
            # parameter the step did not use (a layer layerdrop skipped) a zero gradient, so Adam's momentum
            # still moves it; step() does that part, so that one rank updates exactly like several.
            self._engine.enable_backward_allreduce = False
            self._zero_unused_gradients = [p for group in groups for p in group["params"]]
        self._clipped = [p for group in groups for p in group["params"]] if own_clipping(train) else []
        self.step_skipped = False
        """Whether the last optimizer step was skipped (ZeRO and fp16 skip an update whose gradient overflows)."""

    @property
    def module(self) -> nn.Module:
        return self._engine.module

    @property
    def device(self) -> torch.device:
        return self._engine.device

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype floating-point inputs are handed to the model in (autocast casts bf16 inside)."""
        return torch.float16 if self.config["fp16"]["enabled"] else torch.float32

    @property
    def global_step(self) -> int:
        return int(self._engine.global_steps)

    @property
    def lr(self) -> float:
        return float(self._scheduler.get_last_lr()[0])

    def plan_schedule(self, total_steps: int) -> None:
        """Make the LR schedule the warm-up + cosine planned for ``total_steps``, at the current step.

        ``--resume --extend`` keeps a run's first plan: past its end the cosine stays at ``min_lr`` (DeepSpeed's
        WarmupCosineLR clamps there). The schedule's state is only its step, so nothing else changes.
        """
        from deepspeed.runtime.lr_schedules import WarmupCosineLR

        params = deepspeed_config(self.train_config, self.world, total_steps)["scheduler"]["params"]
        if params == self.config["scheduler"]["params"]:
            return
        scheduler = WarmupCosineLR(self._engine.optimizer, last_batch_iteration=self._scheduler.last_batch_iteration,
                                   **params)
        scheduler.org_lrs = self._scheduler.org_lrs  # the peak lr: a resumed optimizer already holds a lower one
        scheduler.step(self._scheduler.last_batch_iteration)  # the optimizer's lr at this point of the plan
        self._engine.lr_scheduler = self._scheduler = scheduler
        self.config["scheduler"]["params"] = params

    def train(self, mode: bool = True) -> None:
        self._engine.train(mode)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self._engine.backward(loss)

    def step(self) -> bool:
        """Advance one micro-step; True when it completed an optimizer step (an accumulation boundary)."""
        boundary = self._engine.is_gradient_accumulation_boundary()
        if boundary:
            for param in self._zero_unused_gradients:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
            if self._clipped:
                torch.nn.utils.clip_grad_norm_(self._clipped, self.train_config.optimizer.grad_clip, foreach=True)
        skipped_before = self._engine.skipped_steps
        self._engine.step()
        if boundary:
            self.step_skipped = self._engine.skipped_steps > skipped_before
        return bool(boundary)

    def save(self, directory: Path, tag: str, client_state: dict[str, Any]) -> Path:
        """Write a resumable checkpoint atomically and durably, then prune old ones.

        Every rank writes into a temp folder and fsyncs what it wrote; once all have, rank 0 renames the
        folder into place, fsyncs the parent, points ``latest`` at it and deletes checkpoints beyond
        ``train.keep_checkpoints``. A crash or power cut at any point leaves ``latest`` naming a complete one.
        """
        directory = Path(directory)
        staging = directory / f".tmp-{tag}"
        self._engine.save_checkpoint(str(staging), tag=tag, client_state=client_state, save_latest=False)
        fsync_tree(staging / tag)
        dist.barrier()
        final = directory / tag
        if dist.get_rank() == 0:
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging / tag, final)
            shutil.rmtree(staging, ignore_errors=True)
            fsync_dir(directory)
            atomic_write(directory / LATEST_FILE, tag + "\n")
            prune_checkpoints(directory, self.keep_checkpoints)
        dist.barrier()
        return final

    def load(self, directory: Path) -> dict[str, Any]:
        """Restore model, optimizer, scheduler and the loop's client state from the newest complete checkpoint.

        The one ``latest`` names is used when its files are whole; a truncated one (a crash or power cut
        while it was written) is skipped with a warning for the newest complete one before it. Files are
        read with :class:`SafeCheckpointEngine`, so a file holding anything but plain training state is
        refused, never executed.
        """
        directory = Path(directory)
        tag = latest_tag(directory)
        if tag is None:
            raise CheckpointError(f"no checkpoint to resume from in {directory} (missing '{LATEST_FILE}'); "
                                  "drop --resume to start a fresh run")
        tag = complete_checkpoint(directory, tag)
        try:
            path, client_state = self._engine.load_checkpoint(str(directory), tag=tag)
        except ModbindError:
            raise
        except Exception as err:  # DeepSpeed fails in many ways on a checkpoint of another run
            raise CheckpointError(f"checkpoint {directory / tag} could not be loaded ({type(err).__name__}: "
                                  f"{_first_line(err)}); delete it to resume from an earlier one") from err
        if path is None:
            raise CheckpointError(f"checkpoint {directory / tag} could not be loaded; delete it to resume from scratch")
        return dict(client_state or {})


class SafeCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine, reading with ``weights_only=True`` and modbind's allow-list.

    DeepSpeed's own engine unpickles checkpoint files with ``weights_only=False``, so a file planted in
    a run folder runs its code on ``--resume``. What DeepSpeed stores for ZeRO 0-2 is tensors, containers,
    numbers and strings, plus four plain records in the ZeRO optimizer state: the loss scaler's settings,
    the ZeRO stage enum and the flat-buffer fragment addresses. Those are allowed; anything else fails.
    """

    def load(self, path: str, map_location: Any = None) -> Any:
        return load_pickle(Path(path), extra_globals=_deepspeed_state_types(), map_location=map_location,
                           mmap=False, hint=f"A modbind checkpoint never holds it: delete {Path(path).parent} "
                                            "(--resume then uses the checkpoint before it) or start a new run")


def _deepspeed_state_types() -> list[Any]:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
