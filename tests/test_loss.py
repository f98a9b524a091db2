"""Symmetric InfoNCE and the cross-rank gather that keeps only local gradients."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from modbind.train.engine import free_port
from modbind.train.loss import gather_keep_local_grad, symmetric_info_nce
from modbind.model.aligned import MAX_LOGIT_SCALE


def _pairs(n: int, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_loss_matches_hand_computed_symmetric_cross_entropy() -> None:
    a, t = _pairs(5)
    scale = torch.tensor(7.0)
    logits = scale * a @ t.T
    by_row = -torch.log_softmax(logits, 1).diagonal().mean()
    by_col = -torch.log_softmax(logits, 0).diagonal().mean()
    assert symmetric_info_nce(a, t, scale).item() == pytest.approx(((by_row + by_col) / 2).item(), rel=1e-6)


def test_uninformative_embeddings_give_log_batch_and_matched_pairs_go_lower() -> None:
    same = F.normalize(torch.ones(16, 8), dim=-1)
    assert symmetric_info_nce(same, same, torch.tensor(10.0)).item() == pytest.approx(math.log(16), rel=1e-5)
    a, _ = _pairs(16, d=32)
    assert symmetric_info_nce(a, a, torch.tensor(MAX_LOGIT_SCALE)).item() < 0.05


def test_single_process_gather_is_identity() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_keep_local_grad(x) is x


def _rank_worker(rank: int, world: int, port: int, sizes: list[int], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        a, t = _pairs(sum(sizes))
        start = sum(sizes[:rank])
        local_a = a[start : start + sizes[rank]].clone().requires_grad_(True)
        local_t = t[start : start + sizes[rank]]
        scale = torch.tensor(5.0, requires_grad=True)
        loss = symmetric_info_nce(local_a, local_t, scale)
        loss.backward()
        Path(out, f"rank{rank}.json").write_text(json.dumps(
            {"loss": loss.item(), "grad": local_a.grad.tolist(), "scale_grad": scale.grad.item()}))
    finally:
        dist.destroy_process_group()


def test_two_rank_gather_gives_global_loss_and_local_gradients(tmp_path: Path) -> None:
    """Uneven ranks (3 + 5 rows): each rank sees the 8-row loss and the full-batch gradient of its rows; the
    temperature's gradients sum to the full-batch one."""
    sizes = [3, 5]
    mp.spawn(_rank_worker, args=(2, free_port(), sizes, str(tmp_path)), nprocs=2, join=True)
    a, t = _pairs(sum(sizes))
    a.requires_grad_(True)
    scale = torch.tensor(5.0, requires_grad=True)
    full = symmetric_info_nce(a, t, scale)
    full.backward()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, result in enumerate(ranks):
        assert result["loss"] == pytest.approx(full.item(), rel=1e-6)
        start = sum(sizes[:rank])
        torch.testing.assert_close(torch.tensor(result["grad"]), a.grad[start : start + sizes[rank]])
    # every rank sees the whole temperature: each gets half its gradient, so the ranks' sum is the one-process
    # gradient (the trainer scales the loss by the world size before the engine averages over ranks)
    assert ranks[0]["scale_grad"] == pytest.approx(ranks[1]["scale_grad"], rel=1e-6)
    assert sum(r["scale_grad"] for r in ranks) == pytest.approx(scale.grad.item(), rel=1e-5)
