"""Qwen2-VL / Qwen2.5-VL's vision path: patches of any image size + their grid -> merged LLM embeddings.

The exported graph takes what the processor gives, `pixel_values` [patches, C*T*P*P] and
`image_grid_thw` [images, 3], and stays dynamic in both: rotary positions and attention segments
are computed from the grid inside the graph (`vlq.export.grid`), attention is one masked
attention over all patches of the call instead of transformers' per-image loop. Qwen2.5-VL's
window attention becomes a window mask. The blocks' own modules do all the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlq.errors import InputError
from vlq.export.grid import patch_layout, segment_mask, window_mask
from vlq.export.parity import synthetic_image
from vlq.export.paths import Case, Inputs, VisionPath, split_by_grid
from vlq.export.profile import Profile, grid_profile

#: Square image sides (pixels) of the default profile: MIN, OPT, MAX. 56x56 is the processor's
#: smallest output (min_pixels), so no image falls below a TensorRT engine's minimum.
DEFAULT_IMAGE_SIZES = (56, 448, 896)
_BLOCK_PARTS = ("norm1", "norm2", "mlp", "attn.qkv", "attn.proj")


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Vision RoPE in float32, back to the input dtype (as transformers applies it)."""
    x32 = x.float()
    return (x32 * cos + _rotate_half(x32) * sin).to(x.dtype)


def masked_attention(attn: nn.Module, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
    """The block's attention over all patches of the call, restricted by `mask` [P, P]."""
    n = x.shape[0]
    q, k, v = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = rotary(q, cos, sin), rotary(k, cos, sin)
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask
    )
    return attn.proj(out[0].transpose(0, 1).reshape(n, -1))


class GridEncoder(nn.Module):
    """`pixel_values` + `image_grid_thw` -> merged embeddings [patches / merge^2, hidden]."""

    def __init__(self, tower: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.tower, self.projector = tower, projector
        self.merge = int(tower.spatial_merge_size)
        full = getattr(tower, "fullatt_block_indexes", None)
        self.full_blocks = None if full is None else frozenset(full)
        config = tower.config
        self.window = config.window_size // self.merge // config.patch_size if full is not None else 0

    def forward(self, pixel_values: Tensor, image_grid_thw: Tensor) -> Tensor:
        x = self.tower.patch_embed(pixel_values)
        positions, segment = patch_layout(image_grid_thw, pixel_values.shape[0], self.merge)
        full = segment_mask(segment)
        windowed = window_mask(positions, segment, self.merge, self.window) if self.window else full
        rope = self.tower.rotary_pos_emb
        angles = (positions[..., None].float() * rope.inv_freq.float()).flatten(1)
        angles = torch.cat([angles, angles], dim=-1)[:, None, :]
        scale = getattr(rope, "attention_scaling", 1.0)
        cos, sin = angles.cos() * scale, angles.sin() * scale
        for index, block in enumerate(self.tower.blocks):
            mask = full if self.full_blocks is None or index in self.full_blocks else windowed
            x = x + masked_attention(block.attn, block.norm1(x), cos, sin, mask)
            x = x + block.mlp(block.norm2(x))
        return self.projector(x)


class Qwen2VlPath(VisionPath):
    kind = "qwen2_vl"
    input_names = ("pixel_values", "image_grid_thw")

    def __init__(self, loaded) -> None:
        super().__init__(loaded)
        missing = [p for p in ("patch_embed", "rotary_pos_emb.inv_freq", "blocks") if not _has(self.tower, p)]
        blocks = getattr(self.tower, "blocks", None) or []
        missing += [f"blocks.0.{p}" for p in _BLOCK_PARTS if blocks and not _has(blocks[0], p)]
        if missing or not hasattr(self.tower, "spatial_merge_size"):
            raise InputError(
                f"{self._where()}: tower {type(self.tower).__name__} lacks {', '.join(missing) or 'spatial_merge_size'}; "
                "the qwen2_vl vision path knows Qwen2-VL and Qwen2.5-VL towers"
            )
        self.merge = int(self.tower.spatial_merge_size)

    def _derived_image_processor(self):
        from transformers import Qwen2VLImageProcessor

        vision = self.tower.config
        return Qwen2VLImageProcessor(
            patch_size=vision.patch_size,
            temporal_patch_size=vision.temporal_patch_size,
            merge_size=vision.spatial_merge_size,
        )

    def encoder(self) -> nn.Module:
        return GridEncoder(self.tower, self.projector).eval()

    def dynamic_shapes(self) -> dict:
        return {
            "pixel_values": {0: torch.export.Dim("patches")},
            "image_grid_thw": {0: torch.export.Dim("images")},
        }

    def patches(self, side: int) -> tuple[int, int]:
        """(patch count, values per patch) of one side x side image after the processor's resizing."""
        inputs = self.preprocess([synthetic_image(side, side)])
        return int(inputs["pixel_values"].shape[0]), int(inputs["pixel_values"].shape[1])

    def profile(self, max_batch: int, opt_batch: int, image_sizes) -> Profile:
        sides = image_sizes or DEFAULT_IMAGE_SIZES
        counts = [self.patches(side) for side in sides]
        return grid_profile(
            counts[0][1], (counts[0][0], counts[1][0], counts[2][0]), max_batch, opt_batch, tuple(sides)
        )

    def parity_cases(self, profile: Profile) -> list[Case]:
        lo, mid, hi = profile.image_sizes
        n = profile.max_batch
        cases = [Case.synthetic([(lo, lo)], seed=1), Case.synthetic([(hi, hi)], seed=2)]
        if n > 1:
            cases.append(Case.synthetic([(mid, mid), (lo, mid), (lo, lo)][:n], seed=3))
        if n > 3:
            cases.append(Case.synthetic([(lo, lo)] * n, seed=10))
        return cases

    def trace_images(self, profile: Profile) -> list:
        lo, mid, _ = profile.image_sizes
        return [synthetic_image(mid, mid, seed=1), synthetic_image(lo, mid, seed=2)]

    def _sizes(self, grid: Tensor) -> list[int]:
        return grid.prod(-1).tolist()

    def split(self, inputs: Inputs, max_batch: int) -> list[Inputs]:
        return split_by_grid(inputs, max_batch, "pixel_values", "image_grid_thw")

    def per_image(self, embeds: Tensor, inputs: Inputs) -> tuple[Tensor, ...]:
        return torch.split(embeds, [s // self.merge**2 for s in self._sizes(inputs["image_grid_thw"])])

    def bind(self, args: tuple, kwargs: dict) -> Inputs:
        names = ("pixel_values", "image_grid_thw")
        values = dict(zip(names, args))
        values.update({k: kwargs[k] for k in names if k in kwargs})
        if values.get("image_grid_thw") is None:
            raise InputError("the exported Qwen2-VL encoder needs image_grid_thw with pixel_values")
        return values


def _has(module: nn.Module, path: str) -> bool:
    head, _, attr = path.rpartition(".")
    try:
        owner = module.get_submodule(head) if head else module
    except AttributeError:
        return False
    return hasattr(owner, attr)
