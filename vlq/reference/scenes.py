"""Synthetic scenes (shapes on a 3x3 grid, or a short word) and their renderer.

A scene is a small frozen value: the same scene always renders to the same pixels, so a scene is
its own image key (the training data excludes every held-out scene by value). Rendering is
vectorized torch on the CPU, anti-aliased through signed distances, with no font files or PIL:
characters come from the 5x7 bitmap font below, so the images are identical on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

IMAGE_SIZE = 64
GRID = 3
CELL = IMAGE_SIZE / GRID
MAX_OBJECTS = 5

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 200, 25),
    "purple": (140, 60, 185),
    "orange": (245, 130, 25),
    "black": (25, 25, 25),
}
TEXT_COLORS = ("black", "red", "blue", "green", "purple")
BACKGROUNDS = ((255, 255, 255), (228, 228, 228), (246, 240, 222), (222, 232, 242))
ROW_NAMES = ("top", "middle", "bottom")
COL_NAMES = ("left", "center", "right")

#: 5x7 bitmap glyphs, one string of 7 rows per character (`#` ink, `.` paper).
GLYPHS = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
}
GLYPH_W, GLYPH_H, GLYPH_GAP = 5, 7, 1
TEXT_CHARS = "".join(GLYPHS)  # no I/1, O/0/Q, 8/B or 5/S: look-alikes at this size
MAX_TEXT = 4
#: Words pandas' `read_csv` reads as missing: never drawn nor offered as an option.
PANDAS_NA_WORDS = frozenset({"NA", "NAN", "NULL", "NONE"})


def _font() -> torch.Tensor:
    rows = []
    for glyph in GLYPHS.values():
        rows.append(torch.tensor([[b == "#" for b in row] for row in glyph], dtype=torch.float32))
    return torch.stack(rows)


FONT = _font()
FONT_INDEX = {char: i for i, char in enumerate(GLYPHS)}


@dataclass(frozen=True)
class Obj:
    """One shape in grid cell (row, col), its centre moved by (dx, dy) pixels, `radius` in pixels."""

    shape: str
    color: str
    row: int
    col: int
    dx: int
    dy: int
    radius: int

    @property
    def position(self) -> str:
        if (self.row, self.col) == (1, 1):
            return "center"
        return f"{ROW_NAMES[self.row]} {COL_NAMES[self.col]}"


@dataclass(frozen=True)
class Scene:
    """Either shapes (`objects`) or a word (`text`, drawn at `text_xy` with integer `text_scale`)."""

    background: int
    objects: tuple[Obj, ...] = ()
    text: str = ""
    text_color: str = "black"
    text_xy: tuple[int, int] = (0, 0)
    text_scale: int = 2

    @property
    def is_text(self) -> bool:
        return bool(self.text)


def sample_shapes_scene(rng: random.Random) -> Scene:
    """1-5 shapes in distinct grid cells; repeated shapes and colors are common (counting needs them)."""
    count = rng.choice((1, 1, 2, 2, 3, 3, 4, 5))
    cells = rng.sample([(r, c) for r in range(GRID) for c in range(GRID)], count)
    shapes = rng.sample(SHAPES, rng.randint(1, min(count, len(SHAPES))))
    colors = rng.sample(list(COLORS), rng.randint(1, min(count, len(COLORS))))
    objects = tuple(
        Obj(
            rng.choice(shapes),
            rng.choice(colors),
            r,
            c,
            rng.randint(-2, 2),
            rng.randint(-2, 2),
            rng.randint(5, 7),
        )
        for r, c in sorted(cells)
    )
    return Scene(background=rng.randrange(len(BACKGROUNDS)), objects=objects)


def sample_text_scene(rng: random.Random) -> Scene:
    """A 1-4 character word at 2x scale somewhere in the image."""
    length = rng.randint(1, MAX_TEXT)
    text = "".join(rng.choice(TEXT_CHARS) for _ in range(length))
    while text in PANDAS_NA_WORDS:
        text = "".join(rng.choice(TEXT_CHARS) for _ in range(length))
    scale = 2
    width = (length * (GLYPH_W + GLYPH_GAP) - GLYPH_GAP) * scale
    height = GLYPH_H * scale
    xy = (rng.randint(2, IMAGE_SIZE - 2 - width), rng.randint(2, IMAGE_SIZE - 2 - height))
    return Scene(
        background=rng.randrange(len(BACKGROUNDS)),
        text=text,
        text_color=rng.choice(TEXT_COLORS),
        text_xy=xy,
        text_scale=scale,
    )


def sample_scene(rng: random.Random, text_fraction: float = 0.2) -> Scene:
    return sample_text_scene(rng) if rng.random() < text_fraction else sample_shapes_scene(rng)


def _sdf(shape: str, x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (pixels, negative inside) of a shape centred at the origin, of size `r`."""
    ax, ay = x.abs(), y.abs()
    if shape == "circle":
        return torch.sqrt(x * x + y * y) - r
    if shape == "square":
        h = 0.85 * r
        return torch.maximum(ax, ay) - h
    if shape == "diamond":
        return (ax + ay - 1.15 * r) / 2**0.5
    if shape == "cross":
        arm = 0.36 * r
        return torch.minimum(torch.maximum(ax - r, ay - arm), torch.maximum(ax - arm, ay - r))
    if shape == "triangle":  # equilateral, pointing up, bounding box centred at the origin
        big = 1.35 * r  # circumradius
        yc = y - big / 4
        edges = torch.maximum(torch.maximum(yc, 0.866 * x - 0.5 * yc), -0.866 * x - 0.5 * yc)
        return edges - big / 2
    raise ValueError(f"unknown shape {shape}")


_PIX = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
_COLOR_TABLE = torch.tensor(list(COLORS.values()), dtype=torch.float32)
_COLOR_INDEX = {name: i for i, name in enumerate(COLORS)}


def _object_coverage(scenes: list[Scene]):
    """Per object slot and shape, for every scene whose object in that slot has that shape: the
    scenes' indices, those objects, and their pixel coverage `[k, IMAGE_SIZE, IMAGE_SIZE]` in 0..1
    (vectorized over the scenes; the arithmetic per pixel does not depend on the batch)."""
    ys, xs = _PIX.view(1, -1, 1), _PIX.view(1, 1, -1)
    for slot in range(max((len(s.objects) for s in scenes), default=0)):
        for shape in SHAPES:
            where = [
                (i, s.objects[slot])
                for i, s in enumerate(scenes)
                if len(s.objects) > slot and s.objects[slot].shape == shape
            ]
            if not where:
                continue
            objects = [o for _, o in where]
            cx = torch.tensor([(o.col + 0.5) * CELL + o.dx for o in objects]).view(-1, 1, 1)
            cy = torch.tensor([(o.row + 0.5) * CELL + o.dy for o in objects]).view(-1, 1, 1)
            radius = torch.tensor([float(o.radius) for o in objects]).view(-1, 1, 1)
            coverage = (0.5 - _sdf(shape, xs - cx, ys - cy, radius)).clamp(0, 1)
            yield slot, torch.tensor([i for i, _ in where]), objects, coverage


def render_batch(scenes: list[Scene]) -> torch.Tensor:
    """uint8 images `[len(scenes), IMAGE_SIZE, IMAGE_SIZE, 3]` (RGB), vectorized over the batch.

    Objects are painted in scene order, slot by slot for all scenes at once; the arithmetic per
    pixel does not depend on the batch, so `render(scene)` gives the same pixels.
    """
    backgrounds = torch.tensor([BACKGROUNDS[s.background] for s in scenes], dtype=torch.float32)
    images = backgrounds.view(-1, 1, 1, 3).expand(-1, IMAGE_SIZE, IMAGE_SIZE, 3).clone()
    for _, index, objects, coverage in _object_coverage(scenes):
        color = _COLOR_TABLE[[_COLOR_INDEX[o.color] for o in objects]].view(-1, 1, 1, 3)
        images[index] = images[index] * (1 - coverage[..., None]) + color * coverage[..., None]
    for i, scene in enumerate(scenes):
        if scene.text:
            mask = _text_mask(scene)[..., None]
            images[i] = images[i] * (1 - mask) + _COLOR_TABLE[_COLOR_INDEX[scene.text_color]] * mask
    return images.round().clamp(0, 255).to(torch.uint8)


def render(scene: Scene) -> torch.Tensor:
    """uint8 image `[IMAGE_SIZE, IMAGE_SIZE, 3]` (HWC, RGB)."""
    return render_batch([scene])[0]


def _text_mask(scene: Scene) -> torch.Tensor:
    x0, y0 = scene.text_xy
    s = scene.text_scale
    u = torch.div(torch.arange(IMAGE_SIZE) - x0, s, rounding_mode="floor")
    v = torch.div(torch.arange(IMAGE_SIZE) - y0, s, rounding_mode="floor")
    char_pos, col = torch.div(u, GLYPH_W + GLYPH_GAP, rounding_mode="floor"), u % (GLYPH_W + GLYPH_GAP)
    valid_x = (u >= 0) & (col < GLYPH_W) & (char_pos < len(scene.text))
    valid_y = (v >= 0) & (v < GLYPH_H)
    glyphs = FONT[[FONT_INDEX[c] for c in scene.text]]  # [n, 7, 5]
    ci = char_pos.clamp(0, len(scene.text) - 1)
    bits = glyphs[ci.view(1, -1), v.clamp(0, GLYPH_H - 1).view(-1, 1), col.clamp(0, GLYPH_W - 1).view(1, -1)]
    return bits * (valid_y.view(-1, 1) & valid_x.view(1, -1))


#: Classes of the per-patch training targets (`patch_targets`); 0 is "none" in every one of them.
TARGET_CLASSES = {
    "shape": 1 + len(SHAPES),
    "color": 1 + len(COLORS),
    "row": 1 + GRID,
    "col": 1 + GRID,
    "center": 2,
    "char": 1 + len(GLYPHS),
    "ordinal": 1 + MAX_TEXT,
}
_SHAPE_INDEX = {name: i for i, name in enumerate(SHAPES)}


def patch_targets(scenes: list[Scene], patch: int, min_pixels: float = 6.0) -> dict[str, torch.Tensor]:
    """What each `patch` x `patch` cell of each image shows: long tensors `[len(scenes), patches]`.

    A training-only signal for the vision tower (row-major patches, as a ViT orders them): the
    shape, color and grid cell (row, col) of the object that covers most of the patch (at least
    `min_pixels` of coverage), whether the patch holds an object's centre, and for words the
    character that inks most of the patch, its place in the word and the text color. 0 is none.
    """
    side = IMAGE_SIZE // patch
    n, p = len(scenes), side * side
    out = {name: torch.zeros(n, p, dtype=torch.long) for name in TARGET_CLASSES}
    slots = max((len(s.objects) for s in scenes), default=0)
    if slots:
        cover = torch.zeros(n, slots, p)
        for slot, index, _, coverage in _object_coverage(scenes):
            cover[index, slot] = coverage.view(-1, side, patch, side, patch).sum((2, 4)).view(-1, p)
        best, which = cover.max(1)
        present = best >= min_pixels
        for i, scene in enumerate(scenes):
            if not scene.objects:
                continue
            objs = scene.objects
            mask = present[i]
            slot = which[i].clamp(max=len(objs) - 1)
            table = torch.tensor(
                [[1 + _SHAPE_INDEX[o.shape], 1 + _COLOR_INDEX[o.color], 1 + o.row, 1 + o.col] for o in objs]
            )
            values = table[slot] * mask[:, None]
            for k, name in enumerate(("shape", "color", "row", "col")):
                out[name][i] = values[:, k]
            for o in objs:
                x = min(IMAGE_SIZE - 1, int((o.col + 0.5) * CELL + o.dx))
                y = min(IMAGE_SIZE - 1, int((o.row + 0.5) * CELL + o.dy))
                out["center"][i, (y // patch) * side + x // patch] = 1
    for i, scene in enumerate(scenes):
        if not scene.text:
            continue
        ink = _text_mask(scene)
        x0, s = scene.text_xy[0], scene.text_scale
        u = torch.div(torch.arange(IMAGE_SIZE) - x0, s, rounding_mode="floor")
        char_pos = torch.div(u, GLYPH_W + GLYPH_GAP, rounding_mode="floor").clamp(0, len(scene.text) - 1)
        per_char = torch.stack([ink * (char_pos == k).float().view(1, -1) for k in range(len(scene.text))])
        pooled = per_char.view(-1, side, patch, side, patch).sum((2, 4)).view(-1, p)
        best, which = pooled.max(0)
        mask = best >= min_pixels / 2
        chars = torch.tensor([1 + FONT_INDEX[c] for c in scene.text])
        out["char"][i] = chars[which] * mask
        out["ordinal"][i] = (which + 1) * mask
        out["color"][i] = (1 + _COLOR_INDEX[scene.text_color]) * mask
    return out
