"""MMBench-style multiple-choice questions (and training descriptions) about a synthetic scene.

Question kinds map onto MMBench's categories and ability groups (`l2-category` values as the
MMBench TSVs spell them); counting has no MMBench category, so it is named `object_counting`
under cross-instance perception. Every question is unambiguous by construction: an object is
only referred to by a description no other object in the scene matches.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from vlq.reference.scenes import (
    COL_NAMES,
    COLORS,
    GLYPHS,
    GRID,
    PANDAS_NA_WORDS,
    ROW_NAMES,
    SHAPES,
    TEXT_COLORS,
    Obj,
    Scene,
    sample_shapes_scene,
    sample_text_scene,
)

FP_S = "finegrained_perception (instance-level)"
FP_C = "finegrained_perception (cross-instance)"
POSITIONS = tuple(
    "center" if (r, c) == (1, 1) else f"{ROW_NAMES[r]} {COL_NAMES[c]}" for r in range(3) for c in range(3)
)
RELATIONS = ("to the left of", "to the right of", "above", "below")
PLURALS = {"cross": "crosses"}
HINTS = {
    "shapes": (
        "The picture shows simple shapes drawn on a plain background.",
        "Look at every object in the picture before you answer.",
    ),
    "text": (
        "The picture shows a short word written on a plain background.",
        "Read the characters from left to right.",
    ),
}


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: options in the order asked, `answer` is an index into them.

    `subjects`: each object the question names, in order, as (its reference text, its grid
    cell `3 * row + col`): training-only labels (where the model should look), never asked.
    """

    kind: str
    question: str
    options: tuple[str, ...]
    answer: int
    category: str
    l2_category: str
    hint: str | None = None
    subjects: tuple[tuple[str, int], ...] = ()

    @property
    def answer_letter(self) -> str:
        return "ABCD"[self.answer]


def _subject(ref: str, obj: Obj) -> tuple[str, int]:
    return ref, obj.row * GRID + obj.col


def _plural(shape: str) -> str:
    return PLURALS.get(shape, shape + "s")


def _references(obj: Obj, scene: Scene, avoid: str) -> list[str]:
    """Descriptions that pick out `obj` alone, not using the attribute `avoid` (shape/color/position)."""
    others = [o for o in scene.objects if o is not obj]
    refs = []
    if avoid != "shape" and all(o.shape != obj.shape for o in others):
        refs.append(f"the {obj.shape}")
    if avoid != "color" and all(o.color != obj.color for o in others):
        refs.append(f"the {obj.color} object")
    if avoid not in ("shape", "color") and all((o.shape, o.color) != (obj.shape, obj.color) for o in others):
        refs.append(f"the {obj.color} {obj.shape}")
    if avoid != "position":
        refs.append(
            "the object in the center" if obj.position == "center" else f"the object at the {obj.position}"
        )
    return refs


def _choices(
    rng: random.Random, answer: str, pool: tuple[str, ...] | list[str], n: int = 4
) -> tuple[tuple[str, ...], int]:
    """`n` options (answer plus distinct distractors from `pool`) in random order; index of the answer."""
    distractors = rng.sample([p for p in pool if p != answer], min(n, len(pool)) - 1)
    options = [answer, *distractors]
    rng.shuffle(options)
    return tuple(options), options.index(answer)


def _shape_of(rng: random.Random, scene: Scene) -> Question | None:
    obj = rng.choice(scene.objects)
    ref = rng.choice(_references(obj, scene, "shape"))
    options, answer = _choices(rng, obj.shape, SHAPES)
    return Question(
        "shape",
        f"What is the shape of {ref}?",
        options,
        answer,
        "attribute_recognition",
        FP_S,
        subjects=(_subject(ref, obj),),
    )


def _color_of(rng: random.Random, scene: Scene) -> Question | None:
    obj = rng.choice(scene.objects)
    ref = rng.choice(_references(obj, scene, "color"))
    options, answer = _choices(rng, obj.color, tuple(COLORS))
    return Question(
        "color",
        f"What color is {ref}?",
        options,
        answer,
        "attribute_recognition",
        FP_S,
        subjects=(_subject(ref, obj),),
    )


def _position_of(rng: random.Random, scene: Scene) -> Question | None:
    obj = rng.choice(scene.objects)
    refs = _references(obj, scene, "position")
    if not refs:
        return None
    options, answer = _choices(rng, obj.position, POSITIONS)
    ref = rng.choice(refs)
    return Question(
        "position",
        f"Where is {ref} in the image?",
        options,
        answer,
        "object_localization",
        FP_S,
        subjects=(_subject(ref, obj),),
    )


def _count(rng: random.Random, scene: Scene) -> Question | None:
    what = rng.choice(("shape", "color", "all"))
    if what == "shape":
        shape = rng.choice(SHAPES) if rng.random() < 0.2 else rng.choice(scene.objects).shape
        value, text = (
            sum(o.shape == shape for o in scene.objects),
            f"How many {_plural(shape)} are there in the image?",
        )
    elif what == "color":
        color = rng.choice(tuple(COLORS)) if rng.random() < 0.2 else rng.choice(scene.objects).color
        value, text = (
            sum(o.color == color for o in scene.objects),
            f"How many {color} objects are there in the image?",
        )
    else:
        value, text = len(scene.objects), "How many objects are there in the image?"
    options, answer = _choices(rng, str(value), tuple(str(n) for n in range(7)))
    return Question("count", text, options, answer, "object_counting", FP_C)


def _relation(rng: random.Random, scene: Scene) -> Question | None:
    pairs = [
        (a, b)
        for a in scene.objects
        for b in scene.objects
        if a is not b and (a.row == b.row or a.col == b.col)
    ]
    rng.shuffle(pairs)
    for a, b in pairs:
        refs_a, refs_b = _references(a, scene, "position"), _references(b, scene, "position")
        if not refs_a or not refs_b:
            continue
        if a.row == b.row:
            relation = RELATIONS[0] if a.col < b.col else RELATIONS[1]
        else:
            relation = RELATIONS[2] if a.row < b.row else RELATIONS[3]
        ref_a, ref_b = rng.choice(refs_a), rng.choice(refs_b)
        options, answer = _choices(rng, relation, RELATIONS)
        text = f"Is {ref_a} to the left of, to the right of, above or below {ref_b}?"
        subjects = (_subject(ref_a, a), _subject(ref_b, b))
        return Question("relation", text, options, answer, "spatial_relationship", FP_C, subjects=subjects)
    return None


def _compare(rng: random.Random, scene: Scene) -> Question | None:
    if len(scene.objects) < 2:
        return None
    a, b = rng.sample(scene.objects, 2)
    attribute = rng.choice(("color", "shape"))
    ref_a, ref_b = rng.choice(_references(a, scene, attribute)), rng.choice(_references(b, scene, attribute))
    same = getattr(a, attribute) == getattr(b, attribute)
    options, answer = _choices(rng, "Yes" if same else "No", ("Yes", "No"), 2)
    text = f"Do {ref_a} and {ref_b} have the same {attribute}?"
    subjects = (_subject(ref_a, a), _subject(ref_b, b))
    return Question("compare", text, options, answer, "attribute_comparison", FP_C, subjects=subjects)


def _read_text(rng: random.Random, scene: Scene) -> Question | None:
    chars = tuple(GLYPHS)
    wrong: set[str] = set()
    while len(wrong) < 3:
        at = rng.randrange(len(scene.text))
        new = scene.text[:at] + rng.choice([c for c in chars if c != scene.text[at]]) + scene.text[at + 1 :]
        if new not in PANDAS_NA_WORDS:
            wrong.add(new)
    options, answer = _choices(rng, scene.text, [scene.text, *sorted(wrong)])
    return Question("ocr", "What text is written in the image?", options, answer, "ocr", FP_S)


def _text_color(rng: random.Random, scene: Scene) -> Question | None:
    options, answer = _choices(rng, scene.text_color, TEXT_COLORS)
    return Question(
        "text_color", "What color is the text in the image?", options, answer, "attribute_recognition", FP_S
    )


#: Question generators by kind; each returns None when the scene cannot support the question.
KINDS: dict[str, Callable[[random.Random, Scene], Question | None]] = {
    "shape": _shape_of,
    "color": _color_of,
    "position": _position_of,
    "count": _count,
    "relation": _relation,
    "compare": _compare,
    "ocr": _read_text,
    "text_color": _text_color,
}
TEXT_KINDS = frozenset({"ocr", "text_color"})


def ask(rng: random.Random, kind: str, hint_rate: float = 0.15) -> tuple[Scene, Question]:
    """A fresh scene and a question of `kind` about it (scenes are drawn until one supports it)."""
    while True:
        scene = sample_text_scene(rng) if kind in TEXT_KINDS else sample_shapes_scene(rng)
        question = KINDS[kind](rng, scene)
        if question is not None:
            break
    if rng.random() < hint_rate:
        question = replace(question, hint=rng.choice(HINTS["text" if scene.is_text else "shapes"]))
    return scene, question


def describe(scene: Scene) -> str:
    """A caption listing every object with its place (a dense training signal, and the demo's answer)."""
    if scene.is_text:
        return f'The text "{scene.text}" written in {scene.text_color}.'
    parts = [
        f"{'an' if o.color[0] in 'aeiou' else 'a'} {o.color} {o.shape} "
        + ("in the center" if o.position == "center" else f"at the {o.position}")
        for o in scene.objects
    ]
    counts = Counter(o.shape for o in scene.objects)
    summary = ", ".join(f"{n} {s if n == 1 else _plural(s)}" for s, n in sorted(counts.items()))
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{len(parts)} object{'s' if len(parts) > 1 else ''} ({summary}): {listed}."


def mmbench_prompt(question: Question) -> str:
    """VLMEvalKit's MCQ prompt for this question (the same text `vlq.eval.prompt.build_prompt` builds)."""
    prompt = f"Hint: {question.hint}\n" if question.hint is not None else ""
    prompt += f"Question: {question.question}\n"
    prompt += "Options:\n" + "".join(f"{'ABCD'[i]}. {text}\n" for i, text in enumerate(question.options))
    return prompt + "Please select the correct answer from the options above. \n"
