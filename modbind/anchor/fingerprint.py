"""Cheap, exact checks that frozen weights are what they were: tensor fingerprints and file hashes.

A tensor fingerprint hashes, per tensor, its name, shape and dtype, a strided sample of its values and an
exact integer checksum of *all* its bits (the raw bits summed as integers). Integer sums do not depend on
reduction order, so the result is identical on CPU and GPU and any single changed element changes it,
while costing one read of the weights and no large temporary copies.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

SAMPLE_SIZE = 1024
"""Values sampled per tensor (strided) in addition to the full checksum; catches swapped elements."""
CHUNK = 1 << 22
"""Elements per checksum chunk, bounding the temporary int64 buffer to 32 MiB."""

_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_SHA256_BLOB = re.compile(r"^[0-9a-f]{64}$")


def tensor_fingerprint(tensors: Mapping[str, Tensor]) -> str:
    """A sha256 hex digest of ``tensors`` (e.g. a state dict) that changes when any value changes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        if tensor.numel() == 0:
            continue
        flat = _as_integers(tensor.reshape(-1))
        stride = max(1, flat.numel() // SAMPLE_SIZE)
        digest.update(flat[::stride][:SAMPLE_SIZE].to("cpu", torch.int64).numpy().tobytes())
        digest.update(str(_exact_checksum(flat)).encode())
    return digest.hexdigest()


def _as_integers(flat: Tensor) -> Tensor:
    """The tensor's raw bits as same-width integers (bool and complex handled via bytes)."""
    if flat.dtype == torch.bool:
        return flat.to(torch.uint8)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    if flat.is_floating_point():
        return flat.contiguous().view(_INT_VIEW[flat.element_size()])
    return flat


def _exact_checksum(flat: Tensor) -> int:
    total = 0
    for start in range(0, flat.numel(), CHUNK):
        total += int(flat[start : start + CHUNK].sum(dtype=torch.int64).item())
    return total


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, reusing the digest a Hugging Face cache blob is named after."""
    path = Path(path)
    resolved = path.resolve()
    if resolved.parent.name == "blobs" and _SHA256_BLOB.match(resolved.name):
        return resolved.name  # LFS blobs in the HF cache are stored under their own sha256
    stat = os.stat(resolved)
    return _hash_file(str(resolved), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    """Stream-hash a file once per (path, size, mtime) in this process."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
