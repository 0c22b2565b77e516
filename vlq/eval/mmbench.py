"""`vlq eval mmbench`: answer MMBench with a model (or read a predictions file), score it circularly.

The pieces are small and separate: `mmbench_data` reads the TSV, `prompt` builds VLMEvalKit's
prompt, `runner` asks the model, `extract` matches answers to letters with VLMEvalKit's rules,
`scoring` scores and compares with a baseline, `outputs` writes the files. This module only
orchestrates: batches prepared one or two ahead in a loader thread, a resumable cache appended
after every batch, results written atomically, the gate decided last.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlq.errors import InputError, UsageError
from vlq.eval.cache import Prediction, PredictionCache, model_fingerprint, settings_key
from vlq.eval.extract import REFUSED, extract_choice
from vlq.eval.mmbench_data import McqRow, is_na, limit_questions, load_mcq_tsv
from vlq.eval.outputs import write_acc_csv, write_predictions_tsv
from vlq.eval.prompt import build_prompt
from vlq.eval.runner import KV_BITS, McqInput, McqModel, kv_cache_factory, open_runner
from vlq.eval.scoring import (
    BaselineComparison,
    acc_csv_rows,
    accuracy_table,
    apply_gate,
    compare_runs,
    gate_failure,
    score_questions,
)
from vlq.output import write_json

MODES = ("generate", "logits")
UNMATCHED_EXAMPLES = 5
#: Batches prepared ahead of the model by the loader thread.
PREFETCH = 2


@dataclass(frozen=True)
class MmbenchOptions:
    """Every option of `vlq eval mmbench`."""

    model: str | None = None
    data: str | None = None
    predictions: str | None = None
    kv_bits: int = 16
    limit: int | None = None
    batch_size: int = 8
    mode: str = "generate"
    max_new_tokens: int = 32
    out: str | None = None
    baseline: str | None = None
    max_drop: float | None = None
    device: str = "auto"
    dtype: str = "auto"
    vit_backend: str = "torch"
    vit_dir: str | None = None

    def validate(self) -> None:
        if (self.model is None) == (self.predictions is None):
            raise UsageError("give either MODEL or --predictions PRED.tsv")
        if self.model is not None and self.data is None:
            raise UsageError("--data MMBench_DEV_EN.tsv is required with MODEL (vlq never downloads MMBench)")
        if self.predictions is not None and (self.kv_bits != 16 or self.mode != "generate"):
            raise UsageError("--kv-bits and --mode describe a model run; --predictions only scores a file")
        if self.mode not in MODES:
            raise UsageError(f"--mode {self.mode}: use generate or logits")
        if self.kv_bits not in KV_BITS:
            raise UsageError(f"--kv-bits {self.kv_bits}: use 16, 8 or 4")
        if self.batch_size < 1 or self.max_new_tokens < 1 or (self.limit is not None and self.limit < 1):
            raise UsageError("--batch-size, --max-new-tokens and --limit must be at least 1")
        if self.max_drop is not None and (self.baseline is None or self.max_drop < 0):
            raise UsageError("--max-drop needs --baseline BASELINE.json and a value >= 0 (percentage points)")


@dataclass
class MmbenchResult:
    model: str | None
    predictions_file: str | None
    quantized: bool | None
    kv_bits: int
    mode: str
    data: str
    data_md5: str
    limit: int | None
    counts: dict[str, int]
    #: Circular accuracy (fractions): Overall, the ability groups, the categories. None: no answers.
    metrics: dict[str, float] | None
    #: The same over the main rows alone, without the rotations.
    metrics_vanilla: dict[str, float] | None
    #: VLMEvalKit's `_acc.csv` rows (circular), one per split.
    acc_table: list[dict[str, Any]]
    unmatched: int
    unmatched_examples: list[dict[str, Any]]
    timing: dict[str, float]
    files: dict[str, str]
    settings_key: str | None = None
    baseline: BaselineComparison | None = None
    notes: list[str] = field(default_factory=list)
    #: Per row: index, prediction text, extracted choice (None: unmatched), answer, option probabilities.
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def scored(self) -> bool:
        return self.metrics is not None

    def to_dict(self, with_rows: bool = True) -> dict[str, Any]:
        data = _finite(asdict(self))
        if not with_rows:
            data.pop("rows")
        return data

    def raise_for_gate(self) -> None:
        """Raise `GateFailed` (exit code 4) when a `--max-drop` gate was set and failed."""
        if self.baseline is not None and self.baseline.passed is False:
            raise gate_failure(self.baseline)


def _finite(value: Any) -> Any:
    """NaN and infinities -> None, so the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class _ImageDecoder:
    """Base64 -> RGB PIL image, remembering the last few: rotations of a question share an image."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self.recent: dict[int, Any] = {}

    def __call__(self, row: McqRow):
        import base64

        from PIL import Image

        key = id(row.image_b64)
        if key not in self.recent:
            try:
                image = Image.open(io.BytesIO(base64.b64decode(row.image_b64))).convert("RGB")
            except (ValueError, OSError) as exc:
                raise InputError(f"row {row.index}: cannot decode its image ({exc})") from None
            if len(self.recent) >= self.keep:
                self.recent.pop(next(iter(self.recent)))
            self.recent[key] = image
        return self.recent[key]


def _prefetched(chunks: Iterable[list[McqRow]], prepare: Callable[[list[McqRow]], Any]) -> Iterator[tuple]:
    """(chunk, prepared batch) pairs, the preparation running in one thread ahead of the consumer."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlq-mmbench-loader")
    pending: deque = deque()
    chunks = iter(chunks)
    try:
        for chunk in chunks:
            pending.append((chunk, pool.submit(prepare, chunk)))
            if len(pending) > PREFETCH:
                chunk, future = pending.popleft()
                yield chunk, future.result()
        while pending:
            chunk, future = pending.popleft()
            yield chunk, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def predict(
    rows: list[McqRow],
    runner: McqModel,
    mode: str,
    batch_size: int,
    cache: PredictionCache,
    on_batch: Callable[[int], None] = lambda n: None,
) -> dict[int, Prediction]:
    """Ask the model every row (rotations of one question side by side), appending to the cache."""
    decoder = _ImageDecoder()
    ordered = sorted(rows, key=lambda r: (r.main_index, r.index))
    chunks = (ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size))

    def prepare(chunk: list[McqRow]) -> Any:
        return runner.prepare(
            [McqInput(decoder(row), build_prompt(row), tuple(row.options)) for row in chunk]
        )

    found: dict[int, Prediction] = {}
    with contextlib.closing(_prefetched(chunks, prepare)) as batches:  # stops the loader on errors too
        for chunk, batch in batches:
            if mode == "logits":
                batch_probs = runner.option_probs(batch)
                new = [Prediction(r.index, max(p, key=p.get), p) for r, p in zip(chunk, batch_probs)]
            else:
                new = [Prediction(r.index, text) for r, text in zip(chunk, runner.answer(batch))]
            cache.append(new)
            found.update((p.index, p) for p in new)
            on_batch(len(new))
    return found


def _read_baseline(path: str, need_scores: bool) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError:
        raise InputError(f"baseline {path} is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "metrics" not in data:
        raise InputError(f"baseline {path} is not a result JSON of vlq eval mmbench")
    if need_scores and not data["metrics"]:
        raise InputError(f"baseline {path} has no scores (a TEST-split run): --max-drop cannot compare")
    return data


def _is_quantized(model: str) -> bool | None:
    config = Path(model) / "config.json"
    if not config.is_file():
        return None
    return bool(json.loads(config.read_text()).get("quantization_config"))


@dataclass
class _Predicted:
    """What scoring needs, however the predictions were obtained."""

    name: str
    rows: list[McqRow]
    columns: list[str]
    data_file: str
    data_md5: str
    predictions: dict[int, Prediction]
    quantized: bool | None = None
    reused: int = 0
    skipped_no_image: int = 0
    settings_key: str | None = None
    timing: dict[str, float] = field(default_factory=lambda: {"load_s": 0.0, "predict_s": 0.0})
    files: dict[str, str] = field(default_factory=dict)


def _from_predictions_file(options: MmbenchOptions) -> _Predicted:
    """A VLMEvalKit-style predictions TSV (data columns + `prediction`).

    With `--data` too, questions and answers come from the data file (as VLMEvalKit takes them
    from its dataset) and every predicted index must exist there.
    """
    table = load_mcq_tsv(options.predictions, require_images=False, extra_required=("prediction",))
    predictions = {}
    for row in table.rows:
        text = row.cells["prediction"]
        predictions[row.index] = Prediction(row.index, "nan" if is_na(text) else text)  # pandas' str(NaN)
    source = table
    if options.data is not None:
        source = load_mcq_tsv(options.data, require_images=False)
        unknown = sorted(set(predictions) - {row.index for row in source.rows})
        if unknown:
            raise InputError(f"{options.predictions}: index {unknown[0]} is not in {options.data}")
    rows = limit_questions([row for row in source.rows if row.index in predictions], options.limit)
    name = Path(options.predictions).stem
    return _Predicted(name, rows, source.columns, str(source.path), source.md5, predictions)


def _from_model(
    options: MmbenchOptions, out: Path, runner: McqModel | None, on_progress: Callable[[int, int], None]
) -> _Predicted:
    """Answers from the model, reusing the cache of an earlier run with the same settings."""
    kv_cache_factory(options.kv_bits)  # a missing KV-cache module fails now, not after loading
    data = load_mcq_tsv(options.data)
    rows = limit_questions(data.rows, options.limit)
    _check_gate_possible(options, rows, str(data.path))
    from vlq.models.loading import resolve_device

    settings = {
        "model": model_fingerprint(options.model),
        "data_md5": data.md5,
        "mode": options.mode,
        "kv_bits": options.kv_bits,
        "max_new_tokens": options.max_new_tokens if options.mode == "generate" else None,
        "dtype": options.dtype,
        # with the checkpoint (fingerprinted above) the device kind fixes the compute dtype:
        # `auto` computes a float16 checkpoint in float32 on the CPU
        "device": resolve_device(options.device).type,
    }
    name = data.path.stem
    key = settings_key(settings)
    out.mkdir(parents=True, exist_ok=True)
    cache = PredictionCache(out / f"{name}_cache.jsonl", key)
    wanted = {row.index for row in rows}
    predictions = {i: p for i, p in cache.load().items() if i in wanted}
    found = _Predicted(
        name,
        rows,
        data.columns,
        str(data.path),
        data.md5,
        predictions,
        _is_quantized(options.model),
        reused=len(predictions),
        skipped_no_image=data.skipped_no_image,
        settings_key=key,
        files={"cache": str(cache.path)},
    )
    todo = [row for row in rows if row.index not in predictions]
    done = found.reused
    on_progress(done, len(rows))
    if todo:
        if runner is None:
            loading = time.perf_counter()
            runner, found.quantized = open_runner(
                options.model, options.kv_bits, options.max_new_tokens, options.device, options.dtype,
                options.vit_backend, options.vit_dir,
            )
            found.timing["load_s"] = time.perf_counter() - loading

        def advance(n: int) -> None:
            nonlocal done
            done += n
            on_progress(done, len(rows))

        predicting = time.perf_counter()
        predictions.update(predict(todo, runner, options.mode, options.batch_size, cache, advance))
        seconds = time.perf_counter() - predicting
        found.timing.update(predict_s=seconds, rows_per_s=len(todo) / seconds if seconds > 0 else math.inf)
    found.files["predictions"] = str(out / f"{name}_predictions.tsv")
    write_predictions_tsv(Path(found.files["predictions"]), data.columns, rows, predictions)
    return found


def _check_gate_possible(options: MmbenchOptions, rows: list[McqRow], data_file: str) -> None:
    if options.max_drop is not None and not any(row.answer is not None for row in rows):
        raise UsageError(f"--max-drop needs answers; {data_file} has none (a TEST split?)")


def _score(options: MmbenchOptions, found: _Predicted) -> MmbenchResult:
    rows, predictions = found.rows, found.predictions
    choices = {row.index: extract_choice(predictions[row.index].text, row.options) for row in rows}
    unmatched = [row for row in rows if choices[row.index] is None]
    scores = score_questions(rows, choices)
    scored_rows = sum(row.answer is not None for row in rows)
    notes = []
    if not scores:
        notes.append(f"{found.data_file} has no answers (a TEST split?): predictions only, nothing scored")
    elif scored_rows < len(rows):
        notes.append(f"{len(rows) - scored_rows} row(s) have no answer and are not scored")
    return MmbenchResult(
        model=options.model,
        predictions_file=options.predictions,
        quantized=found.quantized,
        kv_bits=options.kv_bits,
        mode=options.mode,
        data=found.data_file,
        data_md5=found.data_md5,
        limit=options.limit,
        counts={
            "questions": sum(row.is_main for row in rows),
            "rows": len(rows),
            "scored_questions": len(scores),
            "scored_rows": scored_rows,
            "reused_from_cache": found.reused,
            "unmatched": len(unmatched),
            "refused": sum(choice == REFUSED for choice in choices.values()),
            "skipped_no_image": found.skipped_no_image,
        },
        metrics=accuracy_table(scores) if scores else None,
        metrics_vanilla=accuracy_table(scores, circular=False) if scores else None,
        acc_table=acc_csv_rows(scores),
        unmatched=len(unmatched),
        unmatched_examples=[
            {"index": row.index, "prediction": predictions[row.index].text}
            for row in unmatched[:UNMATCHED_EXAMPLES]
        ],
        timing=found.timing,
        files=found.files,
        settings_key=found.settings_key,
        notes=notes,
        rows=[
            {
                "index": row.index,
                "prediction": predictions[row.index].text,
                "choice": choices[row.index],
                "answer": row.answer,
                "probs": predictions[row.index].probs,
            }
            for row in rows
        ],
    )


def default_out_dir(options: MmbenchOptions) -> Path:
    name = Path(options.model).name if options.model else Path(options.predictions).stem
    return Path("vlq-eval") / (name or "model")


def evaluate_mmbench(
    options: MmbenchOptions,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    runner: McqModel | None = None,
) -> MmbenchResult:
    """Run (or read) predictions, score them, write the result files, compare with a baseline.

    `runner` replaces loading `options.model` (tests, other backends). A failed `--max-drop`
    gate is recorded in the result; `result.raise_for_gate()` turns it into `GateFailed`.
    """
    start = time.perf_counter()
    options.validate()
    baseline = _read_baseline(options.baseline, options.max_drop is not None) if options.baseline else None
    out = Path(options.out) if options.out else default_out_dir(options)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file")
    if options.predictions is not None:
        found = _from_predictions_file(options)
        _check_gate_possible(options, found.rows, found.data_file)
        on_progress(len(found.rows), len(found.rows))
        out.mkdir(parents=True, exist_ok=True)
    else:
        found = _from_model(options, out, runner, on_progress)
    result = _score(options, found)
    if baseline is not None:
        result.baseline = compare_runs(result.to_dict(), baseline, options.baseline)
        if options.max_drop is not None:
            apply_gate(result.baseline, options.max_drop)
    if result.scored:
        result.files["acc"] = str(out / f"{found.name}_acc.csv")
        write_acc_csv(Path(result.files["acc"]), result.acc_table)
    result.files["result"] = str(out / f"{found.name}_result.json")
    result.timing["total_s"] = time.perf_counter() - start
    write_json(Path(result.files["result"]), result.to_dict())
    return result
