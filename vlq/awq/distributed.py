"""Data-parallel calibration: every rank holds the current layer and a contiguous share of the samples.

Each rank runs the layer on its samples; what decides anything is reduced over ranks, so every
rank makes the same decision as one process would:

- per-channel sums and Gram matrices: all-reduce (sum; float64 except the full Gram matrices of
  linear-scored scale groups, which are float32 as in one process);
- per-channel maxima: all-reduce (max);
- output errors of grid candidates and of the finished layer: each rank's per-sample errors are
  gathered and summed in global sample order, exactly as one process sums them.

Only rank 0 writes. `launch` starts the ranks with `torch.multiprocessing` (`--gpus N`); under
`torchrun` the ranks come from the environment. A rank that fails stops all of them: the
parent (or torchrun's agent) terminates the others and the error names the rank.
"""

from __future__ import annotations

import os
import queue
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch

from vlq.errors import UsageError, VlqError

TIMEOUT = timedelta(minutes=30)


def shard_bounds(n_samples: int, world: int, rank: int) -> tuple[int, int]:
    """This rank's contiguous slice of the samples (sizes differ by at most one)."""
    base, extra = divmod(n_samples, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class Reducer:
    """Reductions over ranks. This base class is one process: every operation is the identity."""

    rank = 0
    world = 1

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def sum_int(self, value: int) -> int:
        return value

    def gather_samples(self, values: torch.Tensor) -> torch.Tensor:
        """Per-sample values of every rank, in global sample order."""
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        return value

    def barrier(self) -> None:
        pass


LOCAL = Reducer()


class ProcessGroupReducer(Reducer):
    """Reductions through torch.distributed (NCCL for CUDA tensors, gloo for CPU ones)."""

    def __init__(self, rank: int, world: int, sample_counts: list[int]):
        self.rank, self.world = rank, world
        self.sample_counts = sample_counts

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def sum_int(self, value: int) -> int:
        tensor = torch.tensor([value], dtype=torch.int64, device=self._device())
        return int(self.sum_(tensor).item())

    def gather_samples(self, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        longest = max(self.sample_counts)
        padded = torch.zeros(longest, dtype=values.dtype, device=values.device)
        padded[: values.numel()] = values
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([part[:count] for part, count in zip(parts, self.sample_counts)])

    def broadcast(self, value: Any) -> Any:
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def _device(self) -> torch.device:
        import torch.distributed as dist

        return (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )


def torchrun_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))


def rank_device(device: str, local_rank: int) -> str:
    """The device of one rank: its own GPU, or the CPU (gloo) when --device cpu."""
    if device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise UsageError("--gpus needs CUDA devices; use --device cpu to run the ranks on the CPU (gloo)")
    if local_rank >= torch.cuda.device_count():
        raise UsageError(f"--gpus: rank {local_rank} has no GPU ({torch.cuda.device_count()} visible)")
    return f"cuda:{local_rank}"


def init_process_group(device: str, rank: int, world: int) -> None:
    import torch.distributed as dist

    backend = "gloo" if device == "cpu" else "nccl"
    if device != "cpu":
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, events, target: Callable, payload: Any) -> None:
    """One spawned rank: join the group, run `target(payload, rank, world, emit)`, report back."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(rank)

    def emit(kind: str, value: Any) -> None:
        if rank == 0:
            events.put((kind, value))

    try:
        result = target(payload, emit)
        emit("done", result)
    except VlqError as exc:
        events.put(("error", (rank, exc)))
        raise
    except BaseException as exc:
        events.put(("error", (rank, RuntimeError(f"rank {rank} failed: {type(exc).__name__}: {exc}"))))
        raise


def launch(world: int, target: Callable, payload: Any, on_event: Callable[[str, Any], None]) -> Any:
    """Run `target(payload, emit)` in `world` fresh processes; rank 0's events reach `on_event`.

    Returns rank 0's result. If any rank fails, the others are terminated and its error is raised
    here (a `VlqError` as itself, anything else as a RuntimeError naming the rank).
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    processes = mp.start_processes(
        _worker,
        args=(world, _free_port(), events, target, payload),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    result, error = None, None

    def drain() -> None:
        nonlocal result, error
        while True:
            try:
                kind, value = events.get_nowait()
            except queue.Empty:
                return
            if kind == "done":
                result = value
            elif kind == "error":
                error = error or value[1]
            else:
                on_event(kind, value)

    try:
        while not processes.join(timeout=0.2):
            drain()
    except Exception as exc:  # a rank died: start_processes has terminated the others
        drain()
        if error is not None:
            raise error from None
        raise RuntimeError(f"a calibration rank failed: {exc}") from None
    drain()
    if error is not None:
        raise error
    return result
