"""Shape profiles: the min/opt/max shape of every encoder input, as TensorRT's optimization profile.

The profile is computed once at export time, written to manifest.json and checked by vlq itself
before an engine runs, so an input outside it fails naming the profile instead of deep inside
TensorRT. Pure data and arithmetic: no torch, no TensorRT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vlq.errors import InputError, UsageError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class InputRange:
    """One input's shapes: TensorRT tunes kernels for `opt` and accepts anything between `min` and `max`."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError(f"{self.name}: min/opt/max have different ranks")
        if not all(lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max)):
            raise ValueError(
                f"{self.name}: need min <= opt <= max per axis, got {self.min} {self.opt} {self.max}"
            )

    def contains(self, shape: Shape) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for s, lo, hi in zip(shape, self.min, self.max)
        )


@dataclass(frozen=True)
class Profile:
    """All inputs of one optimization profile, plus the batch (images per call) it was built for."""

    inputs: tuple[InputRange, ...]
    max_batch: int
    opt_batch: int
    #: Square image sides (MIN, OPT, MAX) a dynamic-resolution profile was computed from.
    image_sizes: tuple[int, int, int] | None = None

    def describe(self) -> str:
        return "; ".join(
            f"{r.name} min {list(r.min)} opt {list(r.opt)} max {list(r.max)}" for r in self.inputs
        )

    def check(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """Raise `InputError` naming the profile when an input is missing or outside its range."""
        for r in self.inputs:
            if r.name not in shapes:
                raise InputError(f"input {r.name} missing; the encoder takes {[i.name for i in self.inputs]}")
            shape = tuple(int(s) for s in shapes[r.name])
            if not r.contains(shape):
                raise InputError(
                    f"{r.name} shape {list(shape)} is outside the TensorRT profile ({self.describe()}); "
                    "re-export with a larger --max-batch or --image-sizes, or use fewer or smaller images per call"
                )

    def to_dict(self) -> dict:
        return {
            "max_batch": self.max_batch,
            "opt_batch": self.opt_batch,
            "image_sizes": list(self.image_sizes) if self.image_sizes else None,
            "inputs": {
                r.name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for r in self.inputs
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Profile:
        ranges = tuple(
            InputRange(name, tuple(v["min"]), tuple(v["opt"]), tuple(v["max"]))
            for name, v in data["inputs"].items()
        )
        sizes = data.get("image_sizes")
        return cls(ranges, int(data["max_batch"]), int(data["opt_batch"]), tuple(sizes) if sizes else None)


def check_batches(max_batch: int, opt_batch: int) -> None:
    if max_batch < 1:
        raise UsageError(f"--max-batch {max_batch}: must be at least 1")
    if not 1 <= opt_batch <= max_batch:
        raise UsageError(f"--opt-batch {opt_batch}: must be between 1 and --max-batch {max_batch}")


def parse_image_sizes(text: str | None) -> tuple[int, int, int] | None:
    """`MIN,OPT,MAX` image sides in pixels (one number means all three), ascending."""
    if text is None or not text.strip():
        return None
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(
            f"--image-sizes {text!r}: expected MIN,OPT,MAX in pixels, e.g. 224,448,896"
        ) from None
    if len(sizes) == 1:
        sizes = sizes * 3
    if len(sizes) != 3 or not 0 < sizes[0] <= sizes[1] <= sizes[2]:
        raise UsageError(f"--image-sizes {text!r}: expected three positive ascending sides MIN,OPT,MAX")
    return sizes[0], sizes[1], sizes[2]


def fixed_image_profile(name: str, image_shape: Shape, max_batch: int, opt_batch: int) -> Profile:
    """Fixed-resolution towers (CLIP, SigLIP): only the batch axis moves."""
    shape = tuple(image_shape)
    return Profile(
        (InputRange(name, (1, *shape), (opt_batch, *shape), (max_batch, *shape)),), max_batch, opt_batch
    )


def grid_profile(
    patch_dim: int,
    patches: tuple[int, int, int],
    max_batch: int,
    opt_batch: int,
    image_sizes: tuple[int, int, int],
) -> Profile:
    """Dynamic-resolution towers (Qwen2-VL): patches of all images in a call, plus one grid row per image.

    `patches` are the per-image patch counts at the MIN, OPT and MAX image sizes, so the profile
    spans one smallest image up to `max_batch` largest ones.
    """
    lo, mid, hi = patches
    return Profile(
        (
            InputRange(
                "pixel_values", (lo, patch_dim), (mid * opt_batch, patch_dim), (hi * max_batch, patch_dim)
            ),
            InputRange("image_grid_thw", (1, 3), (opt_batch, 3), (max_batch, 3)),
        ),
        max_batch,
        opt_batch,
        image_sizes,
    )
