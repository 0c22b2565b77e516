"""The reference VLM: a small LLaVA trained by `benchmarks/train_reference_vlm.py`, far above chance.

Random tiny models answer MMBench at chance, so their accuracy says nothing about what
quantization costs. This one (CLIP ViT + projector + Llama, 64 px images, hidden 256) was trained
on synthetic shapes/colors/counts/positions/text questions and on the shipped ptb and wikitext-2
`valid.txt` text; `shapes_mmbench_test.tsv` holds its held-out questions in MMBench's layout,
drawn with a different seed and with no training image among them. The shipped weights (two
stages, 9 minutes on one H100) score 85.5% circular there (chance is about 4%): relations between
two objects and positions at 100%, colors, shapes, counts and comparisons at 80-88%, reading at 60%.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

MODEL_NAME = "shapes-llava"
HELDOUT_TSV = "shapes_mmbench_test.tsv"


def _package_path(name: str) -> Path:
    return Path(str(resources.files("vlq.reference") / name))


def reference_model_dir() -> Path:
    """The checkpoint folder (config.json, model.safetensors, tokenizer and processor files)."""
    return _package_path(MODEL_NAME)


def reference_mmbench_tsv() -> Path:
    """The held-out questions: MMBench TSV columns, circular copies at index + k * 1000000."""
    return _package_path(HELDOUT_TSV)
