"""Output folders that are either complete or absent: write into a temp folder, then move into place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlq.errors import InputError

#: Checkpoint files that are re-written, not copied: weights and the config.
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
_NOT_COPIED_NAMES = ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def check_work_dir(path: Path, force: bool, resume: bool = False) -> None:
    """Refuse a non-empty output folder unless the user said --force or --resume."""
    if path.exists() and not path.is_dir():
        raise InputError(f"--work-dir {path} is a file")
    if path.is_dir() and any(path.iterdir()) and not (force or resume):
        raise InputError(f"--work-dir {path} is not empty; pass --force to overwrite it")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it replaces `final`, on failure it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def copy_side_files(source: Path, destination: Path) -> list[str]:
    """Copy tokenizer, processor, chat template, generation config and remote code files."""
    copied = []
    for item in sorted(source.iterdir()):
        if item.is_file() and item.suffix not in _NOT_COPIED_SUFFIXES and item.name not in _NOT_COPIED_NAMES:
            shutil.copy2(item, destination / item.name)
            copied.append(item.name)
    return copied


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
