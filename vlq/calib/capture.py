"""Inputs of decoder layer 0, and moving one layer at a time to the compute device.

The whole model stays on the CPU. A text-only forward runs the embeddings and stops at layer 0,
recording what the model passes it (hidden states plus keyword arguments such as the attention
mask and rotary embeddings); every later layer is called with the same keyword arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class LayerInputs:
    """Per batch chunk: the hidden states and the other arguments a decoder layer is called with."""

    hidden: list[torch.Tensor]
    args: list[tuple] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)


class _StopForward(Exception):
    pass


class _Catcher(nn.Module):
    """Stands in for layer 0: records its call, then stops the forward pass."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.calls: list[tuple[torch.Tensor, tuple, dict]] = []

    def forward(self, *args: Any, **kwargs: Any):
        if args:
            hidden, rest = args[0], args[1:]
        else:
            hidden, rest = kwargs.pop("hidden_states"), ()
        self.calls.append((hidden, rest, kwargs))
        raise _StopForward


# Arguments a layer must not receive during calibration: no KV cache is built or returned.
_DROPPED_KWARGS = ("past_key_value", "past_key_values", "use_cache", "output_attentions")


def capture_layer0_inputs(
    model: nn.Module, layers: nn.ModuleList, samples: torch.Tensor, batch_size: int
) -> LayerInputs:
    """Run the text-only forward on `samples` in chunks of `batch_size` and record layer 0's inputs."""
    catcher = _Catcher(layers[0])
    layers[0] = catcher
    try:
        with torch.no_grad():
            for chunk in samples.split(batch_size):
                with contextlib.suppress(_StopForward):
                    model(input_ids=chunk, attention_mask=torch.ones_like(chunk), use_cache=False)
    finally:
        layers[0] = catcher.layer
    inputs = LayerInputs(hidden=[])
    for hidden, args, kwargs in catcher.calls:
        inputs.hidden.append(hidden.detach())
        inputs.args.append(args)
        inputs.kwargs.append({k: v for k, v in kwargs.items() if k not in _DROPPED_KWARGS})
    return inputs


def to_device(value: Any, device: torch.device) -> Any:
    """Move tensors nested in tuples, lists and dicts to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


@contextlib.contextmanager
def on_device(module: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Move `module` to `device` for the block, back to the CPU after, freeing device memory."""
    module.to(device)
    try:
        yield module
    finally:
        module.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()


def layer_output(output: Any) -> torch.Tensor:
    """Decoder layers return a tensor (transformers 5) or a tuple whose first item is the hidden states."""
    return output[0] if isinstance(output, (tuple, list)) else output
