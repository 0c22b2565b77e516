"""Vision paths: what turns a family's preprocessed pixels into language-model embeddings.

A family says where its tower, projector and image-features method are (`Family.vision`, data);
a vision path of the matching `kind` knows the steps between them, builds the module that is
exported, preprocesses images with the checkpoint's own processor, and can replace the VLM's
image-features method with an exported encoder (the LLM stays in PyTorch). Nothing here names a
module of a particular model: every module comes from the family's `VisionSpec`.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from vlq.errors import InputError, UsageError
from vlq.export.parity import synthetic_image
from vlq.export.profile import Profile
from vlq.loading import LoadedVlm
from vlq.models.base import get_module

#: Encoder inputs of one call: name -> tensor, on the model's device.
Inputs = dict[str, Tensor]
#: Runs an encoder (exported or not) on one call's inputs; returns its output tensor.
Runner = Callable[[Inputs], Tensor]


@dataclass
class Case:
    """Parity case: a label and the images that go through the processor together."""

    label: str
    images: list

    @classmethod
    def synthetic(cls, sizes: Sequence[tuple[int, int]], seed: int = 0) -> Case:
        """Synthetic images of the given (height, width) sizes, labelled like "2 images: 320x240, 180x97"."""
        label = f"{len(sizes)} image{'s' if len(sizes) > 1 else ''}: " + ", ".join(
            f"{w}x{h}" for h, w in sizes
        )
        return cls(label, [synthetic_image(h, w, seed=seed + i) for i, (h, w) in enumerate(sizes)])


class VitPatch:
    """Undo handle of `VisionPath.install`: `restore()` gives the model back its PyTorch vision path."""

    def __init__(self, owner: nn.Module | None = None, method: str = "", backend: str = "torch") -> None:
        self.owner, self.method, self.backend = owner, method, backend

    def restore(self) -> None:
        if self.owner is not None and self.method in vars(self.owner):
            delattr(self.owner, self.method)
        self.owner = None

    def __enter__(self) -> VitPatch:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


class VisionPath(ABC):
    """One kind of vision path, bound to a loaded model through its family's `VisionSpec`."""

    kind: ClassVar[str]
    input_names: ClassVar[tuple[str, ...]]
    output_name: ClassVar[str] = "image_embeds"

    def __init__(self, loaded: LoadedVlm) -> None:
        spec = loaded.family.vision
        self.loaded, self.spec, self.model = loaded, spec, loaded.model
        self.tower = self._module(spec.tower, "vision tower")
        self.projector = self._module(spec.projector, "projector")
        owner_path, _, self.method = spec.features.rpartition(".")
        #: None where the model has no image-features method (the export is then tower + projector).
        self.owner = self._module(owner_path, "image-features owner") if spec.features else None
        if self.owner is not None and not callable(getattr(type(self.owner), self.method, None)):
            raise InputError(f"{self._where()}: {type(self.owner).__name__} has no method {self.method}")
        self.image_processor, self.processor_source = self._image_processor()

    def _where(self) -> str:
        return f"{self.loaded.folder} (family {self.loaded.family.name}, vision path {self.kind})"

    def _module(self, path: str, what: str) -> nn.Module:
        try:
            return get_module(self.model, path)
        except AttributeError:
            raise InputError(
                f"{self._where()}: {what} {path!r} not found; is this checkpoint really "
                f"{self.loaded.family.name}?"
            ) from None

    def _image_processor(self) -> tuple[object, str]:
        from transformers.image_processing_base import ImageProcessingMixin

        processor = self.loaded.processor
        processor = (
            processor
            if isinstance(processor, ImageProcessingMixin)
            else getattr(processor, "image_processor", None)
        )
        if processor is not None:
            return processor, "checkpoint"
        return (
            self._derived_image_processor(),
            "derived from vision_config (the checkpoint has no image processor)",
        )

    @property
    def device(self) -> torch.device:
        return next(self.tower.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.tower.parameters()).dtype

    # --- what each kind provides -------------------------------------------------------------

    @abstractmethod
    def _derived_image_processor(self) -> object:
        """The processor class's defaults fitted to the vision config, for checkpoints without one."""

    @abstractmethod
    def encoder(self) -> nn.Module:
        """The module that is exported: encoder inputs -> LLM embeddings, the family's steps included."""

    @abstractmethod
    def dynamic_shapes(self) -> dict:
        """`torch.export` dynamic shapes of the encoder inputs."""

    @abstractmethod
    def profile(self, max_batch: int, opt_batch: int, image_sizes: tuple[int, int, int] | None) -> Profile:
        """Min/opt/max shapes of every input (TensorRT's optimization profile)."""

    @abstractmethod
    def parity_cases(self, profile: Profile) -> list[Case]:
        """Several batch sizes and resolutions inside `profile`."""

    @abstractmethod
    def trace_images(self, profile: Profile) -> list:
        """Images for the export trace: two, so that no dynamic axis is specialized to 1."""

    @abstractmethod
    def split(self, inputs: Inputs, max_batch: int) -> list[Inputs]:
        """One call's inputs cut into calls of at most `max_batch` images, in order."""

    @abstractmethod
    def per_image(self, embeds: Tensor, inputs: Inputs) -> tuple[Tensor, ...]:
        """Concatenated encoder output -> one [tokens, hidden] tensor per image, as the VLM expects."""

    @abstractmethod
    def bind(self, args: tuple, kwargs: dict) -> Inputs:
        """The encoder inputs of a call to the image-features method; refuse options the export fixed."""

    # --- shared ---------------------------------------------------------------------------------

    def preprocess(self, images: Sequence) -> Inputs:
        """Images through the image processor, as encoder inputs on the model's device and dtype."""
        batch = self.image_processor(images=list(images), return_tensors="pt")
        inputs = {}
        for name in self.input_names:
            value = torch.as_tensor(batch[name])
            inputs[name] = value.to(self.device, self.dtype if value.is_floating_point() else None)
        return inputs

    @torch.no_grad()
    def reference(self, inputs: Inputs) -> Tensor:
        """The VLM's own image features for `inputs` ([tokens, hidden]), even while a patch is installed."""
        original = getattr(type(self.owner), self.method)
        output = original(self.owner, **inputs)
        features = output.pooler_output if hasattr(output, "pooler_output") else output
        if isinstance(features, (list, tuple)):
            features = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
        return features.reshape(-1, features.shape[-1])

    def images_in(self, inputs: Inputs) -> int:
        """Images in one call: every kind's last input has one row per image."""
        return int(inputs[self.input_names[-1]].shape[0])

    def install(self, run: Runner, max_batch: int, backend: str) -> VitPatch:
        """Replace the image-features method of this model instance by one that calls `run`."""
        if self.owner is None:
            raise UsageError(
                f"--vit-backend {backend}: family {self.loaded.family.name} has no image-features method to "
                "replace (its code runs tower and projector inline), so the exported encoder cannot be "
                "plugged into generation; the export itself is usable by a serving stack"
            )

        # The original's signature stays visible: transformers' generate() reads it to route pixels.
        @functools.wraps(getattr(self.owner, self.method))
        def features(*args, **kwargs):
            for flag in ("output_hidden_states", "output_attentions"):
                if kwargs.get(flag):
                    raise UsageError(
                        f"{flag} of the vision tower is not available with --vit-backend {backend}"
                    )
            inputs = self.bind(args, kwargs)
            embeds = torch.cat([run(chunk) for chunk in self.split(inputs, max_batch)])
            return self.result(embeds.to(self.device, self.dtype), inputs, kwargs)

        setattr(self.owner, self.method, features)
        return VitPatch(self.owner, self.method, backend)

    def result(self, embeds: Tensor, inputs: Inputs, kwargs: dict):
        """What the replaced image-features method returns for the encoder output `embeds`."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        output = BaseModelOutputWithPooling(pooler_output=self.per_image(embeds, inputs))
        return output if kwargs.get("return_dict", True) else output.to_tuple()

    def preprocessing(self) -> dict:
        return {
            "source": self.processor_source,
            "class": type(self.image_processor).__name__,
            "settings": json_settings(self.image_processor),
        }

    def vision_parameters(self) -> list[nn.Parameter]:
        """The weights of the vision path (tower, projector, other parts), each once."""
        modules = [self.tower, self.projector, *(get_module(self.model, p) for p in self.spec.parts)]
        return list({id(p): p for m in modules for p in m.parameters()}.values())

    def fingerprint(self, samples: int = 32) -> dict:
        """A few weight values of tower and projector: tells whether an export belongs to this model.

        Values, not a hash, so that the same weights cast to another 16-bit dtype still match.
        """
        params = dict(self.tower.named_parameters(prefix=self.spec.tower))
        for path in (self.spec.projector, *self.spec.parts):
            params.update(get_module(self.model, path).named_parameters(prefix=path))
        names = sorted(params)
        picked = [
            names[i] for i in np.linspace(0, len(names) - 1, min(samples, len(names))).round().astype(int)
        ]
        values = {}
        for name in dict.fromkeys(picked):
            flat = params[name].detach().reshape(-1)
            at = np.linspace(0, flat.numel() - 1, 4).round().astype(int).tolist()
            values[name] = [float(flat[i]) for i in at]
        return {
            "tensors": len(names),
            "numel": int(sum(p.numel() for p in params.values())),
            "values": values,
        }


#: Source image sizes for fixed-crop parity cases (the processor resizes each to the crop).
SOURCE_SIZES = ((240, 320), (512, 512), (97, 180), (333, 250), (720, 1280))


def crop_parity_cases(profile: Profile) -> list[Case]:
    """Batches of 1, 2 and the profile's most, of assorted source sizes: a fixed-crop family's parity cases."""
    batches = sorted({1, min(2, profile.max_batch), profile.max_batch})
    return [
        Case.synthetic([SOURCE_SIZES[(n + i) % len(SOURCE_SIZES)] for i in range(n)], seed=n * 10) for n in batches
    ]


def crop_trace_images() -> list:
    """Two images of different sizes for a fixed-crop export trace."""
    return [synthetic_image(64, 64, seed=1), synthetic_image(48, 80, seed=2)]


def split_by_grid(inputs: Inputs, max_batch: int, pixels_name: str, grid_name: str) -> list[Inputs]:
    """Cut packed patches `[patches, ...]` with a per-image grid `[images, d]` into calls of at most
    `max_batch` images (each image has `prod(grid row)` patch rows)."""
    grid, pixels = inputs[grid_name], inputs[pixels_name]
    sizes = grid.prod(-1).tolist()
    chunks, start = [], 0
    for first in range(0, len(sizes), max_batch):
        count = sum(sizes[first : first + max_batch])
        chunks.append({pixels_name: pixels[start : start + count], grid_name: grid[first : first + max_batch]})
        start += count
    return chunks


def json_settings(processor) -> dict:
    """An image processor's settings as plain JSON (enums such as `resample` by name)."""
    settings = processor.to_dict() if hasattr(processor, "to_dict") else {}
    return json.loads(json.dumps(settings, default=str))


def same_weights(a: dict, b: dict) -> bool:
    """Two fingerprints of the same weights, up to a cast between 16-bit dtypes."""
    if (
        a.get("tensors") != b.get("tensors")
        or a.get("numel") != b.get("numel")
        or a["values"].keys() != b["values"].keys()
    ):
        return False
    return all(np.allclose(a["values"][k], b["values"][k], rtol=1e-2, atol=1e-3) for k in a["values"])


def _kinds() -> dict[str, type[VisionPath]]:
    from vlq.export.features import FeaturesPath, MiniGeminiPath
    from vlq.export.llava import LlavaPath
    from vlq.export.navit import NavitPath
    from vlq.export.qwen2_vl import Qwen2VlPath

    return {cls.kind: cls for cls in (LlavaPath, Qwen2VlPath, FeaturesPath, MiniGeminiPath, NavitPath)}


def vision_path(loaded: LoadedVlm) -> VisionPath:
    """The vision path of a loaded model, or an error saying why it has none that vlq can export."""
    family = loaded.family
    if family.vision is None:
        raise InputError(
            f"{loaded.folder}: family {family.name} has no vision tower (Family.vision is not set); "
            "export-vit needs a vision-language model such as llava or qwen2_vl"
        )
    kinds = _kinds()
    if family.vision.kind not in kinds:
        raise InputError(
            f"{loaded.folder}: family {family.name} declares vision path {family.vision.kind!r}, which export-vit "
            f"does not implement yet (known: {', '.join(sorted(kinds))}); add it in vlq/export/"
        )
    return kinds[family.vision.kind](loaded)
