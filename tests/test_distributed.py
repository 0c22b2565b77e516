"""Data-parallel calibration on the CPU: two gloo processes give the single-process weights."""

import os

import pytest
import torch
from helpers import checkpoint_tensors

from vlq.awq.distributed import launch, shard_bounds
from vlq.awq.pipeline import AutoAwqOptions, auto_awq


def test_shards_cover_the_samples_in_order():
    for n, world in ((5, 2), (8, 3), (3, 3)):
        bounds = [shard_bounds(n, world, r) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_two_gloo_ranks_give_the_single_process_weights(tiny_llava, tmp_path):
    settings = dict(model=str(tiny_llava), calib_samples=5, calib_seqlen=32, device="cpu", search_scale=True)
    single = auto_awq(AutoAwqOptions(work_dir=str(tmp_path / "one"), **settings))
    seen = []
    double = auto_awq(AutoAwqOptions(work_dir=str(tmp_path / "two"), gpus=2, **settings), on_layer=seen.append)
    assert double.world_size == 2 and [r.index for r in seen] == [0, 1]
    a, b = checkpoint_tensors(single.output_dir), checkpoint_tensors(double.output_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for one, two in zip(single.layers, double.layers):
        assert one.awq_error == pytest.approx(two.awq_error, rel=1e-12)
        assert [g.ratio for g in one.groups] == [g.ratio for g in two.groups]


def _rank_one_fails(payload, emit):
    """Rank 1 raises; rank 0 would wait in a collective forever if nobody stopped it."""
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
    if rank == 1:
        raise ValueError(payload)
    dist.barrier()


def test_a_failing_rank_stops_all_with_its_error():
    with pytest.raises(RuntimeError, match="rank 1 failed: ValueError: disk on fire"):
        launch(2, _rank_one_fails, "disk on fire", on_event=lambda kind, value: None)
