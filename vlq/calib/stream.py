"""A model whose weights stay on disk: built without weights (meta device), read layer by layer.

Host memory then holds a few decoder layers and the embeddings, whatever the depth:

- the skeleton is built from the config with parameters on the meta device (buffers such as
  rotary tables are real: they are computed, not loaded);
- the modules the text forward runs before decoder layer 0 (the embeddings) are read from the
  checkpoint when first called, for the layer-0 capture only;
- decoder layer `i` is read from the shards when it is its turn, and dropped after.

Checkpoint keys need not be the module names: transformers 5 renames some at load time (LLaVA's
`language_model.model.layers.N` is `model.language_model.layers.N` in the module tree; Qwen2-VL's
`model.layers.N` too). The decoder layers' checkpoint prefix is found from the data: the one
prefix `P` under which `P.<i>.<name>` exists for every layer `i` and every state-dict name of a
layer. Other modules map through the same prefix change, else by exact name, else by the one
checkpoint key sharing their longest dotted suffix. Output keys are written in checkpoint naming.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vlq.calib.shards import ShardedCheckpoint
from vlq.errors import InputError
from vlq.models.base import Family, get_module
from vlq.models.loading import _auto_class, read_config, resolve_model_dir, torch_dtype
from vlq.models.registry import detect_family, family_for_config

#: glibc's `mallopt` parameter number for the mmap threshold.
_M_MMAP_THRESHOLD = -3


def _libc():
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def fix_mmap_threshold(threshold: int = 2**20) -> None:
    """Serve host allocations of `threshold` bytes or more with mmap, so freeing returns them to the OS.

    glibc otherwise raises its mmap threshold to the size of the largest block freed: once a
    layer's tensors are freed, the next layer's same-sized tensors come from the heap, whose
    freed pages stay resident, and RSS grows by most of a layer per layer (measured on 80 layers
    of 26 MB: 2.4 GB peak). A process-wide setting; a no-op off glibc."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)


def trim_host_memory() -> None:
    """Give freed heap pages of every thread's arena back to the OS (glibc's `malloc_trim`).

    The smaller blocks of a layer's work (and those of the reader and OpenMP threads) otherwise
    accumulate as free but resident heap: measured peak RSS over 144 layers varied between 0.61
    and 0.97 GB from run to run without it, 0.61 GB with it."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def find_layer_prefix(keys: set[str], layer_names: list[list[str]], module_prefix: str) -> str:
    """The checkpoint prefix `P` with `P.<i>.<name>` for every layer `i` and each of its state-dict names."""
    first = layer_names[0][0]
    marker = f".0.{first}"
    candidates = {key[: -len(marker)] for key in keys if key.endswith(marker)}
    valid = [
        p
        for p in candidates
        if all(f"{p}.{i}.{n}" in keys for i, names in enumerate(layer_names) for n in names)
    ]
    if not valid:
        raise InputError(
            f"no checkpoint prefix holds all {len(layer_names)} decoder layers ({module_prefix}.N.{first} ...): "
            "the checkpoint's tensors do not match the model's layers one to one"
        )
    if len(valid) > 1:
        tokens = set(module_prefix.split("."))
        valid.sort(key=lambda p: (-len(tokens & set(p.split("."))), p))
    return valid[0]


def _common_suffix(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


@dataclass
class StreamedModel:
    """A meta-device model, its checkpoint shards, and where its decoder layers live in both."""

    model: nn.Module
    folder: Path
    family: Family
    dtype: torch.dtype
    checkpoint: ShardedCheckpoint
    layer_prefix: str  # in the checkpoint, e.g. "language_model.model.layers"
    layer_names: list[list[str]]  # per decoder layer, its state-dict names relative to it

    @property
    def layers(self) -> nn.ModuleList:
        return get_module(self.model, self.family.layers)

    def layer_key(self, index: int, name: str) -> str:
        return f"{self.layer_prefix}.{index}.{name}"

    def read_layer(self, index: int) -> dict[str, torch.Tensor]:
        """Decoder layer `index`'s tensors (host memory, the model's dtype), by layer-relative name."""
        return {
            name: self.checkpoint.read(self.layer_key(index, name), self.dtype)
            for name in self.layer_names[index]
        }

    def load_layer(self, index: int, tensors: dict[str, torch.Tensor]) -> nn.Module:
        """Give decoder layer `index` the tensors `read_layer` returned (its meta parameters become real)."""
        layer = self.layers[index]
        layer.load_state_dict(tensors, strict=True, assign=True)
        return layer

    def release_layer(self, index: int) -> None:
        """Drop decoder layer `index`'s tensors (back to the meta device) and give the memory back."""
        self.layers[index].to("meta")
        trim_host_memory()

    def non_layer_keys(self) -> list[str]:
        """Checkpoint keys outside the decoder layers (embeddings, vision tower, projector, lm_head...)."""
        prefix = self.layer_prefix + "."
        return [key for key in self.checkpoint.keys if not key.startswith(prefix)]

    def checkpoint_key(self, module_name: str) -> str:
        """The checkpoint key of a non-layer parameter or buffer (see the module docstring)."""
        keys = self.non_layer_keys()
        key_set = set(keys)
        module_base = self.family.layers.rsplit(".", 1)[0] if "." in self.family.layers else ""
        tail = self.family.layers.rsplit(".", 1)[-1]
        ckpt_base = self.layer_prefix[: -len(tail)].rstrip(".") if self.layer_prefix.endswith(tail) else None
        if ckpt_base is not None and module_name.startswith(module_base + "."):
            renamed = ".".join(p for p in (ckpt_base, module_name[len(module_base) + 1 :]) if p)
            if renamed in key_set:
                return renamed
        if module_name in key_set:
            return module_name
        parts = module_name.split(".")
        scored = sorted(((_common_suffix(parts, k.split(".")), k) for k in keys), reverse=True)
        if scored and scored[0][0] >= 2 and (len(scored) == 1 or scored[1][0] < scored[0][0]):
            return scored[0][1]
        raise InputError(f"no checkpoint tensor found for {module_name} in {self.folder}")

    @contextlib.contextmanager
    def embeddings_loaded(self) -> Iterator[None]:
        """While open, any non-layer module is read from the checkpoint when first called (on the
        host), and dropped on exit: the text forward up to layer 0 runs, loading only what it uses."""
        layers = self.layers
        in_layers = {id(m) for layer in layers for m in layer.modules()}
        loaded: list[nn.Module] = []
        names = {id(m): name for name, m in self.model.named_modules()}

        def materialize(module: nn.Module, args: tuple) -> None:
            prefix = names[id(module)]
            for kind in ("_parameters", "_buffers"):
                for name, tensor in list(getattr(module, kind).items()):
                    if tensor is None or not tensor.is_meta:
                        continue
                    full = f"{prefix}.{name}" if prefix else name
                    value = self.checkpoint.read(self.checkpoint_key(full)).to(tensor.dtype)
                    getattr(module, kind)[name] = (
                        nn.Parameter(value, requires_grad=False) if kind == "_parameters" else value
                    )
            loaded.append(module)

        handles = []
        for module in self.model.modules():
            if id(module) in in_layers:
                continue
            direct = [*module._parameters.values(), *module._buffers.values()]
            if any(t is not None and t.is_meta for t in direct):
                handles.append(module.register_forward_pre_hook(materialize))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            for module in loaded:
                module.to("meta")


def open_streamed(model: str, dtype: str = "auto") -> StreamedModel | None:
    """The checkpoint as a `StreamedModel`, or None when it has no safetensors (then load it whole)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    folder = resolve_model_dir(model)
    raw = read_config(folder)
    if raw.get("quantization_config"):
        raise InputError(f"{folder} is already quantized ({raw['quantization_config'].get('quant_method')})")
    checkpoint = ShardedCheckpoint.open(folder)
    if checkpoint is None:
        return None
    fix_mmap_threshold()
    trust = "auto_map" in raw
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
    except Exception as exc:
        raise InputError(f"{folder}: cannot read the model config ({type(exc).__name__}: {exc})") from None
    family = family_for_config(config)
    dtype_ = torch_dtype(dtype, raw)
    try:
        with init_empty_weights(include_buffers=False):
            skeleton = _auto_class(family, raw).from_config(config, dtype=dtype_, trust_remote_code=trust)
    except Exception as exc:
        raise InputError(f"{folder}: cannot build the model ({type(exc).__name__}: {exc})") from None
    skeleton.eval()
    family = family or detect_family(skeleton)
    layers = get_module(skeleton, family.layers)
    layer_names = [list(layer.state_dict().keys()) for layer in layers]
    prefix = find_layer_prefix(set(checkpoint.keys), layer_names, family.layers)
    return StreamedModel(skeleton, folder, family, dtype_, checkpoint, prefix, layer_names)


class LayerPrefetcher:
    """Reads the next decoder layer from disk on a background thread while the current one is calibrated."""

    def __init__(self, streamed: StreamedModel, first: int = 0):
        from concurrent.futures import ThreadPoolExecutor

        self.streamed = streamed
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlq-prefetch")
        self.next_index = first
        self.future = self.pool.submit(streamed.read_layer, first) if first < len(streamed.layers) else None

    def take(self, index: int) -> dict[str, torch.Tensor]:
        """Layer `index`'s tensors (layers are taken in order); starts reading the one after."""
        if index != self.next_index or self.future is None:
            raise RuntimeError(f"layer {index} taken out of order (expected {self.next_index})")
        tensors = self.future.result()
        self.next_index += 1
        more = self.next_index < len(self.streamed.layers)
        self.future = self.pool.submit(self.streamed.read_layer, self.next_index) if more else None
        return tensors

    def close(self) -> None:
        if self.future is not None:
            self.future.cancel()
        self.pool.shutdown(wait=True)
