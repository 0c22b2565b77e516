"""LLaVA's vision path: fixed-size crops -> tower hidden states of the chosen layer(s) -> drop CLS -> projector."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlq.errors import InputError, UsageError
from vlq.export.paths import Case, Inputs, VisionPath, crop_parity_cases, crop_trace_images
from vlq.export.profile import Profile, fixed_image_profile

#: Source resolutions for parity: the processor resizes and crops them all to the tower's size.


class LlavaEncoder(nn.Module):
    """Tower + feature selection + projector, as `LlavaModel.get_image_features` runs them."""

    def __init__(self, tower: nn.Module, projector: nn.Module, layer: int | list[int], strategy: str) -> None:
        super().__init__()
        self.tower, self.projector = tower, projector
        self.layers = [layer] if isinstance(layer, int) else list(layer)
        self.drop_cls = strategy == "default"

    def forward(self, pixel_values: Tensor) -> Tensor:
        hidden = self.tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
        selected = [hidden[i][:, 1:] if self.drop_cls else hidden[i] for i in self.layers]
        return self.projector(torch.cat(selected, dim=-1))


class LlavaPath(VisionPath):
    kind = "llava"
    input_names = ("pixel_values",)

    def __init__(self, loaded) -> None:
        super().__init__(loaded)
        config = self.model.config
        if hasattr(self.owner, "pack_image_features"):
            raise InputError(
                f"{self._where()}: {config.model_type} tiles each image into a variable number of crops (anyres), "
                "which export-vit does not support yet; LLaVA-1.5-style checkpoints (one crop per image) are"
            )
        self.layer = config.vision_feature_layer
        self.strategy = config.vision_feature_select_strategy
        vision = config.vision_config
        self.image_shape = (vision.num_channels, vision.image_size, vision.image_size)

    def _derived_image_processor(self):
        from transformers import CLIPImageProcessor

        size = self.image_shape[-1]
        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    def encoder(self) -> nn.Module:
        return LlavaEncoder(self.tower, self.projector, self.layer, self.strategy).eval()

    def dynamic_shapes(self) -> dict:
        return {"pixel_values": {0: torch.export.Dim("batch")}}

    def profile(self, max_batch: int, opt_batch: int, image_sizes) -> Profile:
        if image_sizes is not None:
            size = self.image_shape[-1]
            raise UsageError(
                f"--image-sizes: {self.loaded.family.name} encodes fixed {size}x{size} crops (the processor resizes "
                "every image to that), so only the batch axis is dynamic; leave --image-sizes out"
            )
        return fixed_image_profile("pixel_values", self.image_shape, max_batch, opt_batch)

    def parity_cases(self, profile: Profile) -> list[Case]:
        return crop_parity_cases(profile)

    def trace_images(self, profile: Profile) -> list:
        return crop_trace_images()

    def split(self, inputs: Inputs, max_batch: int) -> list[Inputs]:
        pixels = inputs["pixel_values"]
        return [{"pixel_values": pixels[i : i + max_batch]} for i in range(0, pixels.shape[0], max_batch)]

    def per_image(self, embeds: Tensor, inputs: Inputs) -> tuple[Tensor, ...]:
        return tuple(embeds)

    def bind(self, args: tuple, kwargs: dict) -> Inputs:
        pixels = args[0] if args else kwargs.get("pixel_values")
        layer, strategy = kwargs.get("vision_feature_layer"), kwargs.get("vision_feature_select_strategy")
        if layer not in (None, self.layer) or strategy not in (None, self.strategy):
            raise UsageError(
                f"the exported encoder has vision_feature_layer={self.layer}, select strategy {self.strategy!r} "
                f"built in; this call asks for {layer}, {strategy!r}"
            )
        if kwargs.get("image_sizes") is not None:
            raise UsageError("image_sizes (tiled LLaVA variants) is not supported by the exported encoder")
        return {"pixel_values": pixels}
