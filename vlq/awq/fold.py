"""Folding per-channel scales into the model so that its 16-bit function is unchanged.

The linears of a group multiply their input columns by `s`; the op that produces their input
divides its output by `s`. Exact for norms (weight and bias) and for a preceding linear (rows);
branches beside a linear (PLoRA's `Plora_A` / `Plora_B`) are scaled with it.
"""

from __future__ import annotations

import torch
from torch import nn

from vlq.models.base import Family


@torch.no_grad()
def divide_output(prev: nn.Module, scales: torch.Tensor) -> None:
    """Divide the output channels of a norm or linear by `scales`."""
    s = scales.to(prev.weight.device, prev.weight.dtype)
    if isinstance(prev, nn.Linear) or prev.weight.dim() == 2:
        prev.weight.div_(s.view(-1, 1))
    else:
        prev.weight.div_(s)
    if getattr(prev, "bias", None) is not None:
        prev.bias.div_(s)


@torch.no_grad()
def multiply_input(linear: nn.Module, scales: torch.Tensor) -> None:
    """Multiply the input columns of a linear's weight by `scales`."""
    linear.weight.mul_(scales.to(linear.weight.device, linear.weight.dtype).view(1, -1))


def fold_scales(prev: nn.Module, linears: list[nn.Module], scales: torch.Tensor, family: Family | None = None) -> None:
    """Apply `scales` to a scale group in place: prev / s, linears * s, and the family's branches.

    A branch that adds into `prev`'s output (PLoRA's `Plora_B`) is divided with it; a branch
    that reads a linear's input (`Plora_A`) is multiplied with it.
    """
    input_sharers = family.input_sharers if family else ()
    output_sharers = family.output_sharers if family else ()
    divide_output(prev, scales)
    for name in output_sharers:
        sharer = getattr(prev, name, None)
        if sharer is not None:
            divide_output(sharer, scales)
    for linear in linears:
        multiply_input(linear, scales)
        for name in input_sharers:
            sharer = getattr(linear, name, None)
            if sharer is not None:
                multiply_input(sharer, scales)
