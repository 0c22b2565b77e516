"""MMBench TSV files (VLMEvalKit's layout): load, validate, resolve shared images, pick a subset.

A row has `index, question, hint, A, B, C, D, answer, category, l2-category, image, split, ...`.
Options are the letter columns whose cell is not empty; a question may stop at B or C. Circular
copies of a question (options rotated) are rows at `index + k * 1_000_000`, and their `image` cell
usually holds only the index of the row whose image they share (a cell of at most 64 characters),
as VLMEvalKit writes them to save space. TEST-split files have no `answer` column.

Cells are read the way VLMEvalKit reads them (pandas `read_csv(sep='\\t')`), including pandas'
default "not available" strings, so an option cell `N/A` or `None` counts as missing here too.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vlq.errors import InputError

CIRCULAR_OFFSET = 1_000_000
#: Cells pandas reads as NaN by default (pandas 2.x `read_csv`), which VLMEvalKit then drops.
NA_STRINGS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
#: Longest image cell that is a reference to another row's image rather than base64 data.
IMAGE_REF_MAX_CHARS = 64
REQUIRED_COLUMNS = ("index", "question", "A", "B")
LETTERS = tuple(string.ascii_uppercase)


def is_na(cell: str | None) -> bool:
    """Whether pandas would read the cell as NaN (exact match, no stripping, as pandas does)."""
    return cell is None or cell in NA_STRINGS


@dataclass(frozen=True)
class McqRow:
    """One question as asked: the options in letter order and the answer letter (None: not given)."""

    index: int
    question: str
    hint: str | None
    options: dict[str, str]
    answer: str | None
    category: str
    l2_category: str
    split: str
    #: The row's cells as read (the image column left out): written back into predictions files.
    cells: dict[str, str] = field(repr=False, compare=False)
    #: Base64 image data, resolved through shared-image references; "" when the file has no images.
    image_b64: str = field(default="", repr=False, compare=False)

    @property
    def main_index(self) -> int:
        """The index of the question this row is a circular copy of (itself for a main row)."""
        return self.index % CIRCULAR_OFFSET

    @property
    def is_main(self) -> bool:
        return self.index < CIRCULAR_OFFSET


@dataclass
class McqData:
    path: Path
    md5: str
    columns: list[str]
    rows: list[McqRow]
    #: Rows dropped because their image cell is empty (VLMEvalKit skips them too).
    skipped_no_image: int = 0

    @property
    def has_answers(self) -> bool:
        return any(row.answer is not None for row in self.rows)

    def main_rows(self) -> list[McqRow]:
        return [row for row in self.rows if row.is_main]


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a tab-separated file with pandas-compatible quoting."""
    if not path.is_file():
        raise InputError(f"data file {path} does not exist (vlq never downloads MMBench: pass a local TSV)")
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            table = list(csv.reader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path} as a UTF-8 TSV: {exc}") from None
    if not table or not table[0]:
        raise InputError(f"{path} is empty")
    header = [name.strip() for name in table[0]]
    body = [cells for cells in table[1:] if any(cell.strip() for cell in cells)]
    for number, cells in enumerate(body, 2):
        if len(cells) != len(header):
            raise InputError(
                f"{path}: data line {number} has {len(cells)} cells, the header has {len(header)}"
            )
    return header, body


def _parse_index(path: Path, cell: str, number: int) -> int:
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{path}: data line {number}: index {cell!r} is not an integer") from None
    if not value.is_integer() or value < 0:
        raise InputError(f"{path}: data line {number}: index {cell!r} is not a non-negative integer")
    return int(value)


def check_image_data(b64: str, where: str) -> None:
    """Decode the base64 and read the image header (no pixel decoding): fail early, name the row."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(b64)
        Image.open(io.BytesIO(raw)).close()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise InputError(f"{where}: the image cell is not base64-encoded image data") from None


def _resolve_images(path: Path, cells_by_index: dict[int, str]) -> dict[int, str]:
    """Base64 data per index: short cells are references to another row's (non-reference) image."""
    resolved = {}
    for index, cell in cells_by_index.items():
        if cell.startswith("[") and cell.endswith("]"):
            raise InputError(
                f"{path}: row {index} holds several images; vlq evaluates single-image questions"
            )
        if len(cell) <= IMAGE_REF_MAX_CHARS:
            try:
                target = int(float(cell))
            except ValueError:
                raise InputError(
                    f"{path}: row {index}: image cell {cell!r} is neither base64 data nor a row index"
                ) from None
            if target not in cells_by_index or len(cells_by_index[target]) <= IMAGE_REF_MAX_CHARS:
                raise InputError(
                    f"{path}: row {index} shares the image of row {target}, which has no image data"
                )
            resolved[index] = cells_by_index[target]
        else:
            resolved[index] = cell
    return resolved


def load_mcq_tsv(
    path: str | Path, require_images: bool = True, extra_required: tuple[str, ...] = ()
) -> McqData:
    """Read and validate an MMBench-format TSV; every problem is an `InputError` naming file and row."""
    path = Path(path)
    header, body = _read_table(path)
    required = REQUIRED_COLUMNS + (("image",) if require_images else ()) + extra_required
    missing = [name for name in required if name not in header]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; expected VLMEvalKit's MMBench TSV layout"
        )
    if len(set(header)) != len(header):
        raise InputError(f"{path}: duplicate column names in the header")
    letters = [name for name in header if name in LETTERS]

    records: list[tuple[int, dict[str, str]]] = []
    seen: set[int] = set()
    for number, cells in enumerate(body, 2):
        record = dict(zip(header, cells))
        index = _parse_index(path, record["index"], number)
        if index in seen:
            raise InputError(f"{path}: index {index} appears twice")
        seen.add(index)
        records.append((index, record))

    skipped = 0
    images: dict[int, str] = {}
    if "image" in header:
        with_image = [(i, r) for i, r in records if not is_na(r["image"])]
        skipped = len(records) - len(with_image)
        records = with_image
        images = _resolve_images(path, {i: r["image"].strip() for i, r in records})
        checked: set[int] = set()
        for index, b64 in images.items():
            if id(b64) not in checked:
                check_image_data(b64, f"{path}: row {index}")
                checked.add(id(b64))
    elif require_images:
        raise InputError(f"{path}: missing column image")

    rows = [_make_row(path, index, record, letters, images.get(index, "")) for index, record in records]
    mains = {row.index for row in rows if row.is_main}
    orphans = sorted(row.index for row in rows if not row.is_main and row.main_index not in mains)
    if orphans:
        raise InputError(
            f"{path}: circular copy {orphans[0]} has no main row {orphans[0] % CIRCULAR_OFFSET}"
            + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else "")
        )
    if not rows:
        raise InputError(f"{path} has no questions")
    return McqData(path, file_md5(path), header, rows, skipped)


def _make_row(path: Path, index: int, record: dict[str, str], letters: list[str], image_b64: str) -> McqRow:
    options = {letter: record[letter] for letter in letters if not is_na(record[letter])}
    if len(options) < 2:
        raise InputError(
            f"{path}: row {index} has {len(options)} option(s); a question needs at least A and B"
        )
    answer = record.get("answer")
    answer = None if is_na(answer) else answer.strip()
    if answer is not None and answer not in options:
        raise InputError(
            f"{path}: row {index}: answer {answer!r} is not one of its options {', '.join(options)}"
        )
    hint = record.get("hint")
    cells = {name: value for name, value in record.items() if name != "image"}
    return McqRow(
        index=index,
        question=record["question"],
        hint=None if is_na(hint) else hint,
        options=options,
        answer=answer,
        category=_text(record.get("category")),
        l2_category=_text(record.get("l2-category")),
        split=_text(record.get("split"), "none"),
        cells=cells,
        image_b64=image_b64,
    )


def _text(cell: str | None, default: str = "") -> str:
    return default if is_na(cell) else cell.strip()


def limit_questions(rows: list[McqRow], limit: int | None) -> list[McqRow]:
    """The first `limit` main questions in file order, with all their circular copies."""
    if limit is None:
        return rows
    keep = {index for index in [row.index for row in rows if row.is_main][:limit]}
    return [row for row in rows if row.main_index in keep]
