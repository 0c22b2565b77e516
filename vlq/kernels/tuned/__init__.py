"""The w4a16 sweep's tables, one generated module per GPU model (`benchmarks/gemm_sweep.py
--write-table vlq/kernels/tuned/NAME.py`), each with the `DEVICE` it was measured on and its
`TUNED` entries per (K, N) and token count.

Why one per model: the best tile and split move with the memory system (the H200's faster HBM
makes fp16 decode faster and shifts where split-K and the GEMV kernel pay), so an H100 should not
run the H200's picks or the other way round. A GPU with no table of its model gets
`heuristic_rp_config`.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.cache
def tables() -> dict[str, dict]:
    """`TUNED` of every module here, by its `DEVICE` name."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[module.DEVICE] = module.TUNED
    return found


def gpu_model(device_name: str) -> str:
    """The model token of a CUDA device name: 'H100' of 'NVIDIA H100 80GB HBM3' and of
    'NVIDIA H100 PCIe', '4090' of 'NVIDIA GeForce RTX 4090'; '' when no token has a digit."""
    return next((token for token in device_name.split() if any(c.isdigit() for c in token)), "")


@functools.cache
def table_device(device_name: str) -> str | None:
    """Which table a device uses: the `DEVICE` of the one measured on it, else on another of its
    model; None when there is none. Cached: `pick_rp_config` asks on every forward."""
    found = tables()
    if device_name in found:
        return device_name
    model = gpu_model(device_name)
    return next((name for name in found if model and gpu_model(name) == model), None)


def table_for(device_name: str) -> dict | None:
    """The table `table_device` names, or None."""
    name = table_device(device_name)
    return tables()[name] if name else None
