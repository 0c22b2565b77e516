"""Calibration text -> token samples.

Built-in names (ptb, wikitext2, c4, pileval) use the hub through `datasets` when it is reachable
and otherwise the text shipped inside vlq (ptb and wikitext-2 `valid.txt`; c4 and pileval are
not shipped). A path to a .txt or .jsonl file is read locally. Samples are `seqlen`-token windows
at seeded random offsets of the tokenized text, as GPTQ and LMDeploy draw them: the same seed
gives the same samples.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

import torch

from vlq.errors import InputError, UsageError

SHIPPED = {"ptb": "ptb", "wikitext2": "wikitext-2"}
HUB_DATASETS = {
    "ptb": ("ptb_text_only", "penn_treebank", "train", "sentence"),
    "wikitext2": ("wikitext", "wikitext-2-raw-v1", "train", "text"),
    "c4": ("allenai/c4", "en", "validation", "text"),
    "pileval": ("mit-han-lab/pile-val-backup", None, "validation", "text"),
}
BUILTIN_NAMES = tuple(HUB_DATASETS)


def shipped_text_path(name: str, split: str = "valid") -> Path:
    """Path of a corpus shipped as package data (`valid` for calibration, `test` for perplexity)."""
    if name not in SHIPPED:
        raise InputError(f"no shipped text for {name!r}; shipped: {', '.join(SHIPPED)}")
    return Path(str(resources.files("vlq") / "data" / SHIPPED[name] / f"{split}.txt"))


def _read_local(path: Path) -> str:
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read calibration file {path}: {exc.__class__.__name__}: {exc}") from None
    if path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                texts.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{path}:{number}: each .jsonl line must be an object with a 'text' field") from None
        return "\n\n".join(texts)
    return raw


def _hub_text(name: str) -> str | None:
    """Train text from the hub, or None when `datasets` or the network is unavailable."""
    try:
        import datasets
        from huggingface_hub.utils import is_offline_mode
    except ImportError:
        return None
    if is_offline_mode():
        return None
    repo, subset, split, field = HUB_DATASETS[name]
    try:
        data = datasets.load_dataset(repo, subset, split=split)
    except Exception:  # no network, no access: fall back to shipped text
        return None
    return "\n\n".join(row[field] for row in data.select(range(min(len(data), 20000))))


def load_calibration_text(dataset: str) -> tuple[str, str]:
    """(text, where it came from) for a built-in name or a local .txt / .jsonl path."""
    path = Path(dataset)
    if dataset not in BUILTIN_NAMES:
        if path.suffix not in (".txt", ".jsonl"):
            raise UsageError(
                f"--calib-dataset {dataset!r}: use one of {', '.join(BUILTIN_NAMES)} or a .txt/.jsonl file"
            )
        if not path.is_file():
            raise InputError(f"calibration file {path} does not exist")
        return _read_local(path), str(path)
    text = _hub_text(dataset)
    if text is not None:
        return text, f"hub:{HUB_DATASETS[dataset][0]}"
    if dataset not in SHIPPED:
        raise InputError(
            f"--calib-dataset {dataset} needs the hub (not reachable); use ptb, wikitext2 or a local .txt/.jsonl file"
        )
    shipped = shipped_text_path(dataset, "valid")
    return _read_local(shipped), f"shipped:{SHIPPED[dataset]}/valid.txt"


def sample_windows(token_ids: list[int], n_samples: int, seqlen: int, seed: int) -> torch.Tensor:
    """`n_samples` windows of `seqlen` tokens at seeded random offsets: int64 `[n_samples, seqlen]`."""
    if len(token_ids) <= seqlen:
        raise InputError(
            f"calibration text has {len(token_ids)} tokens, fewer than --calib-seqlen {seqlen}; "
            "use more text or a shorter --calib-seqlen"
        )
    rng = random.Random(seed)
    starts = [rng.randrange(0, len(token_ids) - seqlen) for _ in range(n_samples)]
    ids = torch.tensor(token_ids, dtype=torch.long)
    return torch.stack([ids[s : s + seqlen] for s in starts])


def calibration_samples(dataset: str, tokenizer, n_samples: int, seqlen: int, seed: int) -> tuple[torch.Tensor, str]:
    """Token samples `[n_samples, seqlen]` and a description of their source."""
    if n_samples < 1 or seqlen < 2:
        raise UsageError("--calib-samples must be >= 1 and --calib-seqlen >= 2")
    text, source = load_calibration_text(dataset)
    if not text.strip():
        raise InputError(f"calibration text from {source} is empty")
    token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return sample_windows(token_ids, n_samples, seqlen, seed), source
