"""Vision path of kind "features": the family's own image-features method, exported as it runs.

For fixed-resolution families whose code has one method from preprocessed crops to LLM
embeddings (InternVL's `get_image_features` with its pixel shuffle, DeepSeek-VL's, InternVL-Chat's
`extract_feature`, XComposer2's `encode_img`, Qwen-VL's `visual`, Mini-Gemini's `encode_images`
with its high-resolution ConvNeXt branch), nothing is re-implemented: the exported module calls
that method, so the graph is exactly the model's own computation. Everything family-specific is
data in the family's `VisionSpec` (method, input names, where the config keeps each input's image
size, what the method returns, the normalization of a derived processor). Only the image axis is
dynamic (one row per crop or tile); the family's code fixes every other shape.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from vlq.errors import InputError, UsageError
from vlq.export.paths import Case, Inputs, VisionPath, crop_parity_cases, crop_trace_images, json_settings
from vlq.export.profile import InputRange, Profile

#: Source resolutions for parity: the processor resizes them all to the tower's size.
#: Keyword arguments of an image-features call that never change its result.
_NEUTRAL_KWARGS = ("return_dict",)


class FeaturesEncoder(nn.Module):
    """Calls the family's features method (its class's own function, so an installed runtime patch
    is never traced) and returns the embeddings tensor; without a method, `projector(tower(x))`."""

    def __init__(self, path: FeaturesPath) -> None:
        super().__init__()
        # Registered so that export sees the weights as parameters; unused ones (an LLM under the
        # same owner) are dropped from the graph by the exporter.
        self.owner = path.owner if path.owner is not None else nn.ModuleDict(
            {"tower": path.tower, "projector": path.projector}
        )
        self.function = getattr(type(path.owner), path.method) if path.owner is not None else None
        self.returns = path.spec.returns

    def forward(self, pixels: Tensor, second: Tensor | None = None) -> Tensor:
        # Named arguments, not *args: torch.export maps dynamic shapes onto the signature.
        pixels = (pixels,) if second is None else (pixels, second)
        if self.function is None:
            return self.owner["projector"](self.owner["tower"](*pixels))
        return embeddings_of(self.function(self.owner, *pixels), self.returns)


def embeddings_of(output, returns: str) -> Tensor:
    if returns == "pooler_output":
        output = output.pooler_output if hasattr(output, "pooler_output") else output[1]
    if isinstance(output, (list, tuple)):
        output = torch.stack(list(output))
    return output


class FeaturesPath(VisionPath):
    kind = "features"

    def __init__(self, loaded) -> None:
        super().__init__(loaded)
        spec = self.spec
        if spec.returns not in ("pooler_output", "tensor"):
            raise InputError(f"{self._where()}: VisionSpec.returns {spec.returns!r}: use pooler_output or tensor")
        if len(spec.image_sizes) != len(spec.inputs):
            raise InputError(
                f"{self._where()}: VisionSpec.image_sizes names {len(spec.image_sizes)} config attributes "
                f"for {len(spec.inputs)} inputs {spec.inputs}"
            )
        if not 1 <= len(spec.inputs) <= 2:
            raise InputError(f"{self._where()}: VisionSpec.inputs {spec.inputs}: kind features takes one or two")
        self.input_names = tuple(spec.inputs)
        self._check_signature()
        config = self.model.config
        self.image_shapes = {
            name: (3, *_side(config, self.model, where, self._where()))
            for name, where in zip(spec.inputs, spec.image_sizes)
        }
        self.processors = {name: self._processor_for(name) for name in self.input_names}

    def _check_signature(self) -> None:
        """The method takes exactly the declared pixel inputs (e.g. DeepSeek-VL-Hybrid's
        `high_res_pixel_values` is not declared by the deepseek_vl spec: a clear error, not a trace failure)."""
        if self.owner is None:
            return
        params = list(inspect.signature(getattr(type(self.owner), self.method)).parameters.values())[1:]
        required = [
            p.name
            for p in params
            if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        extra = required[len(self.input_names) :]
        if extra:
            raise InputError(
                f"{self._where()}: {type(self.owner).__name__}.{self.method} also needs {', '.join(extra)}, "
                f"which the {self.loaded.family.name} vision spec does not provide; export-vit cannot export "
                f"{type(self.model).__name__} yet"
            )

    # --- preprocessing: the checkpoint's processor for a single input, else derived per input ---------

    @property
    def image_processor(self):
        return self.processors[self.input_names[0]]

    @image_processor.setter
    def image_processor(self, value) -> None:  # set by VisionPath.__init__; kept as the first input's
        self._checkpoint_processor = value

    def _processor_for(self, name: str):
        if len(self.input_names) == 1 and self.processor_source == "checkpoint":
            return self._checkpoint_processor
        return self._derive(self.image_shapes[name][1:])

    def _derived_image_processor(self):
        return None  # per input, in `_processor_for`

    def _derive(self, hw: tuple[int, int]):
        from transformers import CLIPImageProcessor

        height, width = hw
        return CLIPImageProcessor(
            size={"height": height, "width": width},
            do_center_crop=False,
            image_mean=list(self.spec.image_mean),
            image_std=list(self.spec.image_std),
        )

    def preprocess(self, images) -> Inputs:
        inputs = {}
        for name in self.input_names:
            batch = self.processors[name](images=list(images), return_tensors="pt")
            inputs[name] = torch.as_tensor(batch["pixel_values"]).to(self.device, self.dtype)
        return inputs

    def preprocessing(self) -> dict:
        if len(self.input_names) == 1 and self.processor_source == "checkpoint":
            return super().preprocessing()
        return {
            "source": "derived from the vision config and the family's VisionSpec (the checkpoint has no "
            "image processor): resize straight to the tower's size, rescale, normalize",
            "class": "CLIPImageProcessor",
            "inputs": {name: json_settings(self.processors[name]) for name in self.input_names},
        }

    # --- the encoder ---------------------------------------------------------------------------------

    def encoder(self) -> nn.Module:
        return FeaturesEncoder(self).eval()

    def dynamic_shapes(self) -> dict:
        batch = torch.export.Dim("batch")
        return {name: {0: batch} for name in self.input_names}

    def profile(self, max_batch: int, opt_batch: int, image_sizes) -> Profile:
        if image_sizes is not None:
            shapes = ", ".join(f"{n} {s[1]}x{s[2]}" for n, s in self.image_shapes.items())
            raise UsageError(
                f"--image-sizes: {self.loaded.family.name} encodes fixed-size crops ({shapes}; the processor "
                "resizes every image to that), so only the batch axis is dynamic; leave --image-sizes out"
            )
        ranges = tuple(
            InputRange(name, (1, *shape), (opt_batch, *shape), (max_batch, *shape))
            for name, shape in self.image_shapes.items()
        )
        return Profile(ranges, max_batch, opt_batch)

    def parity_cases(self, profile: Profile) -> list[Case]:
        return crop_parity_cases(profile)

    def trace_images(self, profile: Profile) -> list:
        return crop_trace_images()

    @torch.no_grad()
    def reference(self, inputs: Inputs) -> Tensor:
        """The model's own method (its class's function: an installed patch is bypassed), positionally."""
        pixels = [inputs[name] for name in self.input_names]
        if self.owner is None:
            return self.projector(self.tower(*pixels))
        return embeddings_of(getattr(type(self.owner), self.method)(self.owner, *pixels), self.spec.returns)

    def split(self, inputs: Inputs, max_batch: int) -> list[Inputs]:
        rows = int(inputs[self.input_names[0]].shape[0])
        return [{name: value[i : i + max_batch] for name, value in inputs.items()} for i in range(0, rows, max_batch)]

    def per_image(self, embeds: Tensor, inputs: Inputs) -> tuple[Tensor, ...]:
        return tuple(embeds)

    def bind(self, args: tuple, kwargs: dict) -> Inputs:
        values = dict(zip(self.input_names, args))
        values.update({k: kwargs[k] for k in self.input_names if k in kwargs})
        missing = [name for name in self.input_names if values.get(name) is None]
        if missing:
            raise UsageError(
                f"the exported {self.loaded.family.name} encoder takes {', '.join(self.input_names)}; "
                f"this call has no {', '.join(missing)}"
            )
        config = self.model.config
        for key, value in kwargs.items():
            if key in self.input_names or key in _NEUTRAL_KWARGS or value is None:
                continue
            if getattr(config, key, object()) != value:
                raise UsageError(
                    f"the exported {self.loaded.family.name} encoder has the config's settings built in; "
                    f"this call passes {key}={value!r}"
                )
        return values

    def result(self, embeds: Tensor, inputs: Inputs, kwargs: dict):
        if self.spec.returns == "tensor":
            return embeds
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        output = BaseModelOutputWithPooling(pooler_output=embeds)
        return output if kwargs.get("return_dict", True) else output.to_tuple()


def _side(config, model: nn.Module, where: str, context: str) -> tuple[int, int]:
    """(height, width) from the first attribute of `where` ("a.b|c") that is set: relative to the
    config, or to the model for options that start with "module:" (towers loaded from elsewhere)."""
    for option in where.split("|"):
        value = model if option.startswith("module:") else config
        for part in option.removeprefix("module:").split("."):
            value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
            if value is None:
                break
        if value is None:
            continue
        if isinstance(value, int):
            return value, value
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return int(value[0]), int(value[1])
        if isinstance(value, dict) and {"height", "width"} <= value.keys():
            return int(value["height"]), int(value["width"])
    raise InputError(f"{context}: no image size in the config at {where!r}")


class MiniGeminiEncoder(nn.Module):
    """Mini-Gemini's `encode_images(images, images_aux)` with the modules the spec names.

    The family's `unified_resampler` reshapes with `len(images_aux)`, a Python int that freezes the
    batch during export; this is the same computation with the batch axis left symbolic (parity
    against the model's own method checks that it is the same).
    """

    def __init__(self, path: FeaturesPath) -> None:
        super().__init__()
        aux, query, key, value = (path._module(p, "Mini-Gemini part") for p in path.spec.parts)
        self.tower, self.aux, self.projector = path.tower, aux, path.projector
        self.query, self.key, self.value = query, key, value

    def forward(self, images: Tensor, images_aux: Tensor) -> Tensor:
        features = self.tower(images)
        aux = self.aux(images_aux).to(features.dtype)
        patch_num = int(features.shape[1] ** 0.5)
        patch_size = aux.shape[-1] // patch_num
        channels = aux.shape[1]
        aux = aux.permute(0, 2, 3, 1).reshape(-1, patch_num, patch_size, patch_num, patch_size, channels)
        aux = aux.permute(0, 1, 3, 2, 4, 5).reshape(-1, patch_num**2, patch_size**2, channels)
        embed_query, embed_aux, embed_value = self.query(features), self.key(aux), self.value(aux)
        att = embed_query[:, :, None] @ (embed_aux.transpose(-1, -2) / (embed_aux.shape[-1] ** 0.5))
        mined = (att.nan_to_num().softmax(-1) @ embed_value).mean(2)
        return self.projector(features + mined)


class MiniGeminiPath(FeaturesPath):
    """Kind "mini_gemini": a features path whose encoder keeps the batch axis dynamic (see above)."""

    kind = "mini_gemini"

    def __init__(self, loaded) -> None:
        super().__init__(loaded)
        if len(self.spec.parts) != 4 or len(self.input_names) != 2:
            raise InputError(
                f"{self._where()}: VisionSpec needs inputs (images, images_aux) and parts (aux tower, "
                "query, aux and value projectors)"
            )

    def encoder(self) -> nn.Module:
        return MiniGeminiEncoder(self).eval()
