"""A resumable predictions cache: one JSON line per answered row, appended after every batch.

Each line carries the hash of every setting that changes an answer (model files, data file,
mode, KV bits, generation length, dtype, prompt version), so a cache written under other settings
is never reused, and an interrupted run picks up where it stopped. A line cut short by a crash
is ignored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

#: Bump when the prompt or the answer post-processing changes: old caches then stop matching.
PROMPT_VERSION = 1


@dataclass(frozen=True)
class Prediction:
    index: int
    text: str
    probs: dict[str, float] | None = None


def model_fingerprint(folder: str | Path) -> dict:
    """Path plus name, size and modification time of every file in the checkpoint folder (cheap)."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return {"path": str(folder), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def settings_key(settings: dict) -> str:
    payload = json.dumps({**settings, "prompt_version": PROMPT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class PredictionCache:
    def __init__(self, path: Path, key: str):
        self.path = path
        self.key = key

    def load(self) -> dict[int, Prediction]:
        found: dict[int, Prediction] = {}
        if not self.path.is_file():
            return found
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the last line of a run killed mid-write
                continue
            if isinstance(record, dict) and record.get("key") == self.key:
                found[int(record["index"])] = Prediction(
                    int(record["index"]), record["text"], record.get("probs")
                )
        return found

    def append(self, predictions: list[Prediction]) -> None:
        lines = [
            json.dumps(
                {"key": self.key, "index": p.index, "text": p.text, "probs": p.probs}, ensure_ascii=False
            )
            for p in predictions
        ]
        with self.path.open("a+b") as handle:
            handle.seek(0, 2)
            if handle.tell():  # after a line cut short, start a fresh one
                handle.seek(-1, 2)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
            handle.write("".join(line + "\n" for line in lines).encode("utf-8"))
            handle.flush()
