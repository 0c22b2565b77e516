"""Qwen2-VL's patch layout computed from `image_grid_thw` with tensor arithmetic only.

transformers builds rotary positions and attention segments with Python loops over
`grid_thw.tolist()`, which a graph export freezes into constants (one fixed grid). The same
numbers follow from index arithmetic on `arange(patches)`, which exports as a graph whose patch
count and image count both stay dynamic. Tested against transformers' own loops.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _floordiv(a: Tensor, b: Tensor | int) -> Tensor:
    return torch.div(a, b, rounding_mode="floor")


def patch_layout(grid_thw: Tensor, num_patches: int, merge: int) -> tuple[Tensor, Tensor]:
    """Per-patch (row, col) positions [P, 2] and attention segment ids [P] for concatenated images.

    Patches come image after image, frame after frame, and inside a frame in `merge` x `merge`
    blocks (block-major), as Qwen2-VL's processor lays them out. One segment is one frame of one
    image: attention never crosses segments.
    """
    grid = grid_thw.to(torch.int64)
    t, h, w = grid[:, 0], grid[:, 1], grid[:, 2]
    frame = h * w
    sizes = t * frame
    ends = torch.cumsum(sizes, 0)
    index = torch.arange(num_patches, device=grid.device)
    image = (index[:, None] >= ends[None, :]).sum(-1)
    local = index - (ends - sizes)[image]
    frame_size, width = frame[image], w[image]
    frame_index = _floordiv(local, frame_size)
    within = local - frame_index * frame_size
    block_row = (width // merge) * merge * merge
    row_block = _floordiv(within, block_row)
    rest = within - row_block * block_row
    col_block = _floordiv(rest, merge * merge)
    inner = rest - col_block * merge * merge
    row = row_block * merge + _floordiv(inner, merge)
    col = col_block * merge + inner % merge
    frames_before = torch.cumsum(t, 0) - t
    segment = frames_before[image] + frame_index
    return torch.stack([row, col], dim=-1), segment


def segment_mask(segment: Tensor) -> Tensor:
    """[P, P] boolean: True where two patches may attend to each other (same segment)."""
    return segment[:, None] == segment[None, :]


def window_mask(positions: Tensor, segment: Tensor, merge: int, window: int) -> Tensor:
    """Qwen2.5-VL window attention as a mask: same segment and same `window` x `window` tile of merged tokens.

    transformers permutes patches into window order and back; attention restricted by a mask
    gives the same result without the permutation (every other op is per patch, and the merger's
    groups of merge*merge patches stay contiguous in both orders).
    """
    tile = _floordiv(_floordiv(positions, merge), window)
    same_tile = (tile[:, None, :] == tile[None, :, :]).all(-1)
    return segment_mask(segment) & same_tile
