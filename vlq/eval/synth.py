"""Small MMBench-format TSVs with real images, for tests and demos (deterministic for a seed).

Each picture is drawn with PIL (shapes of known colours on a coloured background) and stored as
base64 PNG. Several questions ask about the same picture, and all but the first hold only the
index of the first in their `image` cell, as MMBench does. Every question type belongs to one of
MMBench's six ability groups; some have a hint, some only two or three options. Circular copies
(rotated options) follow at `index + k * 1_000_000`, image cells pointing at the main row.
"""

from __future__ import annotations

import base64
import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

from vlq.eval.mmbench_data import CIRCULAR_OFFSET

COLUMNS = (
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
)
COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40)}
BACKGROUNDS = {
    "white": (250, 250, 250),
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
    "pink": (250, 190, 200),
}
CORNERS = {"circle": "0", "triangle": "3", "square": "4"}
IMAGE_SIZE = 64


@dataclass(frozen=True)
class _Picture:
    background: str
    shapes: tuple[tuple[str, str, int], ...]  # (shape, colour, size), left to right


def _draw(picture: _Picture) -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[picture.background])
    draw = ImageDraw.Draw(image)
    slot = IMAGE_SIZE // len(picture.shapes)
    for i, (shape, colour, size) in enumerate(picture.shapes):
        cx, cy, r = slot * i + slot // 2, IMAGE_SIZE // 2, size // 2
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            draw.ellipse(box, fill=COLORS[colour])
        elif shape == "square":
            draw.rectangle(box, fill=COLORS[colour])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLORS[colour])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _options(rng: random.Random, right: str, pool: list[str], n: int) -> list[str]:
    options = [right] + rng.sample([x for x in pool if x != right], n - 1)
    rng.shuffle(options)
    return options


def _questions(rng: random.Random, picture: _Picture) -> list[dict]:
    """Questions about one picture: (question, hint, options, answer text, category, l2-category)."""
    shape, colour, size = picture.shapes[0]
    count = len(picture.shapes)
    asked = [
        dict(
            question=f"What colour is the {shape}?",
            options=_options(rng, colour, list(COLORS), 4),
            answer=colour,
            category="attribute_recognition",
            l2="finegrained_perception (instance-level)",
        ),
        dict(
            question="What colour is the background of the image?",
            answer=picture.background,
            options=_options(rng, picture.background, list(BACKGROUNDS), 4),
            category="image_scene",
            l2="coarse_perception",
        ),
        dict(
            question=f"How many corners does the {shape} have?",
            answer=CORNERS[shape],
            options=_options(rng, CORNERS[shape], list(CORNERS.values()), 3),
            hint="A circle has no corners.",
            category="physical_property_reasoning",
            l2="attribute_reasoning",
        ),
        dict(
            question="How many shapes are in the image?",
            answer=str(count),
            options=_options(rng, str(count), ["1", "2", "3", "4"], 4),
            category="structuralized_imagetext_understanding",
            l2="logic_reasoning",
        ),
    ]
    if count == 2:
        (left, _, a), (right, _, b) = picture.shapes
        asked += [
            dict(
                question="Which shape is on the left?",
                options=_options(rng, left, [left, right], 2),
                answer=left,
                category="spatial_relationship",
                l2="finegrained_perception (cross-instance)",
            ),
            dict(
                question=f"Is the {left} larger than the {right}?",
                answer="Yes" if a > b else "No",
                options=["Yes", "No"],
                hint="Compare the areas of the two shapes.",
                category="physical_relation",
                l2="relation_reasoning",
            ),
        ]
    rng.shuffle(asked)
    return asked[: rng.randint(1, 3)]


def _picture(rng: random.Random) -> _Picture:
    names = rng.sample(list(CORNERS), rng.choice((1, 2)))
    sizes = rng.sample([14, 20, 26], len(names))
    shapes = tuple((name, rng.choice(list(COLORS)), size) for name, size in zip(names, sizes))
    return _Picture(rng.choice(list(BACKGROUNDS)), shapes)


def synth_mmbench(
    path: str | Path,
    questions: int = 12,
    seed: int = 0,
    circular: bool = True,
    answers: bool = True,
    split: str = "dev",
) -> Path:
    """Write a TSV of `questions` main questions (and their rotations when `circular`)."""
    rng = random.Random(seed)
    main: list[dict] = []
    while len(main) < questions:
        picture = _picture(rng)
        image_cell = _draw(picture)
        for number, q in enumerate(_questions(rng, picture)):
            if len(main) == questions:
                break
            index = len(main)
            letters = "ABCD"[: len(q["options"])]
            main.append(
                dict(
                    index=index,
                    question=q["question"],
                    hint=q.get("hint", ""),
                    category=q["category"],
                    **{letter: text for letter, text in zip(letters, q["options"])},
                    answer=letters[q["options"].index(q["answer"])],
                    image=image_cell if number == 0 else str(main[-number]["index"]),
                    source="vlq-synth",
                    **{"l2-category": q["l2"]},
                    comment="",
                    split=split,
                )
            )
    rows = list(main)
    if circular:
        for row in main:
            letters = [x for x in "ABCD" if row.get(x)]
            texts = [row[x] for x in letters]
            for k in range(1, len(letters)):
                rotated = texts[k:] + texts[:k]
                copy = {**row, **dict(zip(letters, rotated)), "index": row["index"] + k * CIRCULAR_OFFSET}
                copy["answer"] = letters[rotated.index(row[row["answer"]])]
                # point at the row that holds the data (VLMEvalKit resolves one level only)
                copy["image"] = row["image"] if len(row["image"]) <= 64 else str(row["index"])
                rows.append(copy)
    columns = [c for c in COLUMNS if answers or c != "answer"]
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[str(row.get(c, "")) for c in columns] for row in rows])
    return path
