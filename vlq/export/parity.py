"""Parity between an exported encoder and PyTorch: images to test on, error figures, the gate.

Images are drawn procedurally (gradients, shapes, noise: structure at every scale, like a photo)
so parity runs offline on any machine; they still go through the checkpoint's own image
processor, so resizing, cropping and normalization are the real ones. Users can add files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vlq.errors import GateFailed, InputError

#: Default gate on `max_rel` per export dtype: fp32 graphs agree to float rounding, fp16 ones to
#: half-precision accumulation over a few dozen layers.
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}


@dataclass
class ParityFigure:
    """Errors of one case. `max_rel` is max |out - ref| over max |ref| (elementwise relative error
    is meaningless where features cross zero); `rel_l2` is ||out - ref|| / ||ref||."""

    case: str
    images: int
    shapes: dict[str, list[int]]
    max_abs: float
    max_rel: float
    rel_l2: float
    mean_abs: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare(
    case: str, images: int, shapes: dict[str, list[int]], out: np.ndarray, ref: np.ndarray
) -> ParityFigure:
    """Error figures of `out` against `ref` (same number of elements; compared in float64)."""
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    if out.shape != ref.shape:
        raise InputError(f"parity case {case}: exported output has {out.size} values, PyTorch {ref.size}")
    diff = np.abs(out - ref)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    norm = float(np.linalg.norm(ref))
    max_abs = float(diff.max()) if diff.size else 0.0
    return ParityFigure(
        case=case,
        images=images,
        shapes=shapes,
        max_abs=max_abs,
        max_rel=max_abs / scale if scale > 0 else max_abs,
        rel_l2=float(np.linalg.norm(out - ref)) / norm if norm > 0 else float(np.linalg.norm(out - ref)),
        mean_abs=float(diff.mean()) if diff.size else 0.0,
    )


def gate(figures: Sequence[ParityFigure], tolerance: float, what: str, aftermath: str) -> None:
    """Raise `GateFailed` naming the worst case when any `max_rel` is above `tolerance` (or not finite)."""
    worst = max(figures, key=lambda f: f.max_rel if np.isfinite(f.max_rel) else np.inf)
    if not np.isfinite(worst.max_rel) or worst.max_rel > tolerance:
        raise GateFailed(
            f"{what} parity failed: case '{worst.case}' max_rel {worst.max_rel:.3e} (max_abs {worst.max_abs:.3e}) "
            f"is above the tolerance {tolerance:.1e}; {aftermath} (raise --tolerance to accept it)"
        )


def synthetic_image(height: int, width: int, seed: int = 0):
    """A deterministic RGB picture: smooth color gradients, a few filled shapes and pixel noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            127
            + 120
            * np.sin(x / max(width, 1) * np.pi * rng.uniform(1, 3) + c * 2.1)
            * np.cos(y / max(height, 1) * np.pi * rng.uniform(1, 3))
            for c in range(3)
        ],
        axis=-1,
    )
    picture = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(6):
        x0, x1 = sorted(rng.integers(0, max(width, 2), 2))
        y0, y1 = sorted(rng.integers(0, max(height, 2), 2))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=color)
    noisy = np.asarray(picture, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def load_images(paths: Sequence[str | Path]) -> list:
    """User images for parity, as RGB PIL images."""
    from PIL import Image

    images = []
    for path in paths:
        try:
            images.append(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read parity image {path}: {exc}") from None
    return images
