"""Result files, each written atomically (temp file, then rename), in VLMEvalKit's formats.

- `<name>_predictions.tsv`: the data columns (image left out) plus `prediction`, every cell
  quoted, as VLMEvalKit dumps its prediction files; `vlq eval mmbench --predictions` reads it back.
- `<name>_acc.csv`: VLMEvalKit's `report_acc` table: `split, Overall, <abilities>, <categories>`,
  one row per split, every cell quoted (pandas `to_csv(index=False, quoting=QUOTE_ALL)`).
- `<name>_result.json`: settings, counts, metrics, baseline comparison and per-row choices.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from vlq.eval.cache import Prediction
from vlq.eval.mmbench_data import McqRow


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _table(rows: list[list[str]], delimiter: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def write_predictions_tsv(
    path: Path, columns: list[str], rows: list[McqRow], predictions: dict[int, Prediction]
) -> None:
    kept = [name for name in columns if name not in ("image", "prediction")]
    table = [kept + ["prediction"]]
    table += [[row.cells.get(name, "") for name in kept] + [predictions[row.index].text] for row in rows]
    atomic_write_text(path, _table(table, "\t"))


def _number(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_acc_csv(path: Path, acc_rows: list[dict[str, object]]) -> None:
    if not acc_rows:
        return
    header = list(acc_rows[0])
    table = [header] + [[_number(row[name]) for name in header] for row in acc_rows]
    atomic_write_text(path, _table(table, ","))
