"""Examples for training the reference VLM, and its held-out MMBench TSV.

Training and held-out data come from the same generator with different seeds; the held-out
scenes are regenerated from their seed and excluded from training by value, so no held-out
image is ever trained on. Circular copies follow MMBench: options rotated, rows at
`index + k * 1_000_000`, the copies' image cell naming the main row (as VLMEvalKit writes them).
"""

from __future__ import annotations

import base64
import csv
import io
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from vlq.eval.mmbench_data import CIRCULAR_OFFSET
from vlq.reference.questions import KINDS, Question, ask, describe, mmbench_prompt
from vlq.reference.scenes import Scene, render, sample_scene

HELDOUT_SEED = 1_000_003
HELDOUT_QUESTIONS = 200
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
    "l2-category",
    "image",
    "split",
)
DESCRIBE_PROMPT = "Describe the image."
SHORT_ANSWER = "Answer the question using a single word or phrase."


@dataclass(frozen=True)
class Example:
    """One training turn: the user prompt (after the image) and the assistant's answer text.

    `question` is what was asked (None for a description).
    """

    scene: Scene
    prompt: str
    answer: str
    question: Question | None = None


#: How often each kind is asked in training (harder kinds more); the held-out set is balanced.
TRAINING_WEIGHTS = {
    "shape": 1.0,
    "color": 1.0,
    "position": 1.0,
    "count": 1.5,
    "relation": 1.5,
    "compare": 1.0,
    "ocr": 1.5,
    "text_color": 0.5,
}


def heldout_items(n: int = HELDOUT_QUESTIONS, seed: int = HELDOUT_SEED) -> list[tuple[Scene, Question]]:
    """The held-out (scene, question) pairs: kinds in turn, every scene distinct."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    items: list[tuple[Scene, Question]] = []
    seen: set[Scene] = set()
    while len(items) < n:
        scene, question = ask(rng, kinds[len(items) % len(kinds)])
        if scene not in seen:
            seen.add(scene)
            items.append((scene, question))
    return items


def training_example(
    rng: random.Random,
    excluded: set[Scene],
    describe_rate: float = 0.25,
    short_rate: float = 0.0,
    weights: dict[str, float] | None = None,
) -> Example:
    """A random example whose scene is not in `excluded`.

    A description (`describe_rate`), a short-answer question answered with the option's text
    (`short_rate`: perception supervised directly, without the letter indirection), or an
    MMBench multiple-choice question answered with its letter.
    """
    draw = rng.random()
    if draw < describe_rate:
        scene = sample_scene(rng)
        while scene in excluded:
            scene = sample_scene(rng)
        return Example(scene, DESCRIBE_PROMPT, describe(scene))
    weights = weights or TRAINING_WEIGHTS
    kind = rng.choices(list(weights), weights=list(weights.values()))[0]
    scene, question = ask(rng, kind)
    while scene in excluded:
        scene, question = ask(rng, kind)
    return question_example(scene, question, short=draw < describe_rate + short_rate)


def question_example(scene: Scene, question: Question, short: bool = False) -> Example:
    """`question` as a training turn: its MMBench prompt and letter, or (`short`) the option's text."""
    if short:
        prompt, answer = f"{question.question}\n{SHORT_ANSWER}", question.options[question.answer]
    else:
        prompt, answer = mmbench_prompt(question), question.answer_letter
    return Example(scene, prompt, answer, question)


def png_base64(scene: Scene) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(render(scene).numpy()).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def rotate(question: Question, k: int) -> Question:
    """The k-th circular copy: option i of the copy is option (i + k) mod n of the original."""
    n = len(question.options)
    options = tuple(question.options[(i + k) % n] for i in range(n))
    return replace(question, options=options, answer=(question.answer - k) % n)


def tsv_rows(items: Iterable[tuple[Scene, Question]], split: str = "dev") -> list[dict[str, str]]:
    """Main rows (index 0..n-1, with images) followed by every circular copy."""
    items = list(items)
    rows = []
    for k in range(4):
        for index, (scene, question) in enumerate(items):
            if k >= len(question.options):
                continue
            q = rotate(question, k)
            letters = dict(zip("ABCD", q.options))
            rows.append(
                {
                    "index": str(index + k * CIRCULAR_OFFSET),
                    "question": q.question,
                    "hint": q.hint or "",
                    **{letter: letters.get(letter, "") for letter in "ABCD"},
                    "answer": q.answer_letter,
                    "category": q.category,
                    "l2-category": q.l2_category,
                    "image": png_base64(scene) if k == 0 else str(index),
                    "split": split,
                }
            )
    return rows


def write_mmbench_tsv(items: Iterable[tuple[Scene, Question]], path: str | Path, split: str = "dev") -> Path:
    """Write the MMBench-layout TSV (tab-separated, pandas-readable) with circular copies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(tsv_rows(items, split))
    return path
