"""The output folder while it is being written: `<work-dir>.partial/`, renamed to `<work-dir>` when complete.

Each finished decoder layer is written as its own shard (atomically: temp file, then rename)
and recorded in `vlq_state.json` (atomically too) with its report, so nothing half-written ever
looks finished. `--resume` continues after the last recorded layer, provided the state was made
from the same checkpoint files and the same result-changing options (its fingerprint); the
earlier layers' 16-bit outputs, which the next layer needs as inputs, are recomputed by running
those layers' 16-bit weights forward, which is cheap and exact (see `vlq.awq.layer`). The final
folder appears only when every shard, the index, config and report are in place.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from vlq import __version__
from vlq.awq.layer import GroupReport, LayerReport
from vlq.calib.shards import DTYPES, INDEX_NAME, ShardedCheckpoint, read_header, write_shard, write_tensors
from vlq.errors import InputError
from vlq.output import write_json

STATE_NAME = "vlq_state.json"
MAX_SHARD_BYTES = 4 * 2**30


def partial_dir(work_dir: Path) -> Path:
    return work_dir.with_name(work_dir.name + ".partial")


def fingerprint(folder: Path, settings: dict) -> dict:
    """What a resumed run must share with the interrupted one: source files (size, mtime) and options."""
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name == "config.json")
    )
    return {
        "vlq_version": __version__,
        "model": str(folder.resolve()),
        "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files},
        "options": settings,
    }


def _rest_plan(checkpoint: ShardedCheckpoint, keys: list[str], dtype: torch.dtype) -> list[list[str]]:
    """Non-layer keys split into shards of at most MAX_SHARD_BYTES (one oversized tensor gets its own)."""
    shards: list[list[str]] = []
    size = MAX_SHARD_BYTES
    for key in keys:
        entry = checkpoint.entries[key]
        nbytes = _out_nbytes(entry.dtype, entry.shape, dtype)
        if size + nbytes > MAX_SHARD_BYTES and (not shards or shards[-1]):
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    return shards


def _out_dtype(dtype_name: str, dtype: torch.dtype) -> torch.dtype:
    source = DTYPES[dtype_name]
    return dtype if source.is_floating_point else source


def _out_nbytes(dtype_name: str, shape: tuple[int, ...], dtype: torch.dtype) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n * torch.empty((), dtype=_out_dtype(dtype_name, dtype)).element_size()


def _report_from_dict(data: dict) -> LayerReport:
    groups = [GroupReport(**{**g, "linears": tuple(g["linears"])}) for g in data.get("groups", [])]
    return LayerReport(**{**data, "groups": groups})


class PartialOutput:
    """Rank 0's writer of `<work-dir>.partial/`: layer shards, state, and the final rename."""

    def __init__(
        self,
        work_dir: Path,
        checkpoint: ShardedCheckpoint,
        rest_keys: list[str],
        num_layers: int,
        dtype: torch.dtype,
        stamp: dict,
        resume: bool,
    ):
        self.work_dir, self.dir = work_dir, partial_dir(work_dir)
        self.checkpoint, self.dtype, self.num_layers = checkpoint, dtype, num_layers
        self.rest = _rest_plan(checkpoint, rest_keys, dtype)
        self.total_shards = num_layers + len(self.rest)
        self.stamp = stamp
        self.reports: list[LayerReport] = []
        if resume and (self.dir / STATE_NAME).is_file():
            self._load_state()
        else:
            if self.dir.exists():
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True)
            self._save_state()

    def shard_name(self, number: int) -> str:
        return f"model-{number + 1:05d}-of-{self.total_shards:05d}.safetensors"

    def _load_state(self) -> None:
        try:
            state = json.loads((self.dir / STATE_NAME).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read {self.dir / STATE_NAME} ({exc}); rerun without --resume") from None
        if state.get("fingerprint") != self.stamp:
            changed = _differences(state.get("fingerprint") or {}, self.stamp)
            raise InputError(
                f"{self.dir} was made from a different checkpoint or options ({', '.join(changed)}); "
                "rerun without --resume to start over"
            )
        for data in state["layers"]:
            if not (self.dir / self.shard_name(data["index"])).is_file():
                break
            self.reports.append(_report_from_dict(data))

    def _save_state(self) -> None:
        state = {"fingerprint": self.stamp, "layers": [asdict(r) for r in self.reports]}
        write_json(self.dir / STATE_NAME, state)

    @property
    def finished(self) -> int:
        """Decoder layers already written (a resumed run starts after them)."""
        return len(self.reports)

    def write_layer(self, report: LayerReport, tensors: dict[str, torch.Tensor]) -> None:
        """Write one finished layer's shard, then record it; in that order, so a kill never records a half shard."""
        if report.index != self.finished:
            raise RuntimeError(f"layer {report.index} written out of order (expected {self.finished})")
        write_tensors(self.dir / self.shard_name(report.index), tensors)
        self.reports.append(report)
        self._save_state()

    def finalize(self, write_extras) -> Path:
        """Write the non-layer shards, the index and `write_extras(folder)` (config, side files,
        report), then move the folder into place as `<work-dir>`."""
        for number, keys in enumerate(self.rest, start=self.num_layers):
            specs = [
                (
                    key,
                    _out_dtype(self.checkpoint.entries[key].dtype, self.dtype),
                    self.checkpoint.entries[key].shape,
                )
                for key in keys
            ]
            write_shard(
                self.dir / self.shard_name(number), specs, lambda key: self.checkpoint.read(key, self.dtype)
            )
        weight_map, total = {}, 0
        for number in range(self.total_shards):
            name = self.shard_name(number)
            _, header = read_header(self.dir / name)
            for key, meta in header.items():
                if key != "__metadata__":
                    weight_map[key] = name
                    total += meta["data_offsets"][1] - meta["data_offsets"][0]
        write_json(
            self.dir / INDEX_NAME,
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
        )
        write_extras(self.dir)
        (self.dir / STATE_NAME).unlink()
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        self.dir.rename(self.work_dir)
        return self.work_dir


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "files":
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out or ["state"]
