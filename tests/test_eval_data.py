"""MMBench TSV loading and validation, the prompt string, and the synthetic data generator."""

import base64
import csv
import io

import pytest
from PIL import Image

from vlq.errors import InputError
from vlq.eval.mmbench_data import limit_questions, load_mcq_tsv
from vlq.eval.prompt import build_messages, build_prompt
from vlq.eval.synth import synth_mmbench

HEADER = [
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
]


def png_b64(colour=(255, 0, 0)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_tsv(path, rows, header=HEADER):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(name, "") for name in header])
    return path


def row(index, image=None, **cells):
    base = dict(
        index=index,
        question="What colour is it?",
        A="red",
        B="blue",
        C="green",
        D="yellow",
        answer="A",
        category="attribute_recognition",
        **{"l2-category": "finegrained_perception (instance-level)"},
        image=png_b64() if image is None else image,
        split="dev",
    )
    base.update(cells)
    return base


def test_prompt_matches_vlmevalkit_exactly(tmp_path):
    data = load_mcq_tsv(
        write_tsv(
            tmp_path / "d.tsv",
            [
                row(0, hint="Look at the centre."),
                row(1, C="", D=""),
                row(2, hint="nan", D=""),
            ],
        )
    )
    first, second, third = data.rows
    assert build_prompt(first) == (
        "Hint: Look at the centre.\n"
        "Question: What colour is it?\n"
        "Options:\nA. red\nB. blue\nC. green\nD. yellow\n"
        "Please select the correct answer from the options above. \n"
    )
    assert build_prompt(second) == (
        "Question: What colour is it?\nOptions:\nA. red\nB. blue\n"
        "Please select the correct answer from the options above. \n"
    )
    assert build_prompt(third).startswith(
        "Question: What colour is it?\nOptions:\nA. red\nB. blue\nC. green\nPlease"
    )
    assert build_messages("p") == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "p"}]}
    ]


def test_shared_images_resolve_to_the_referenced_row(tmp_path):
    blue = png_b64((0, 0, 255))
    data = load_mcq_tsv(
        write_tsv(
            tmp_path / "d.tsv",
            [
                row(0),
                row(1, image=blue),
                row(2, image="1"),
                row(1000001, image="1", A="blue", B="red", answer="B"),
            ],
        )
    )
    images = {r.index: r.image_b64 for r in data.rows}
    assert images[2] == images[1000001] == blue
    assert images[0] != blue
    assert data.rows[3].main_index == 1 and not data.rows[3].is_main


def test_missing_options_and_na_cells(tmp_path):
    data = load_mcq_tsv(write_tsv(tmp_path / "d.tsv", [row(0, C="N/A", D=""), row(1, D="None", hint="NaN")]))
    assert list(data.rows[0].options) == ["A", "B"]
    assert list(data.rows[1].options) == ["A", "B", "C"]
    assert data.rows[1].hint is None


def test_test_split_without_answers(tmp_path):
    header = [h for h in HEADER if h != "answer"]
    data = load_mcq_tsv(
        write_tsv(tmp_path / "test.tsv", [row(0, split="test"), row(1, split="test")], header)
    )
    assert not data.has_answers
    assert all(r.answer is None for r in data.rows)


def test_rows_without_image_are_skipped_as_vlmevalkit_does(tmp_path):
    data = load_mcq_tsv(write_tsv(tmp_path / "d.tsv", [row(0), row(1, image="")]))
    assert [r.index for r in data.rows] == [0]
    assert data.skipped_no_image == 1


@pytest.mark.parametrize(
    "rows, header, message",
    [
        ([row(0)], [h for h in HEADER if h != "question"], "missing column(s) question"),
        ([row(0)], [h for h in HEADER if h != "image"], "missing column(s) image"),
        ([row(0, image="!!not-base64-at-all!!" * 10)], HEADER, "row 0: the image cell is not base64"),
        (
            [row(0, image=base64.b64encode(b"plain text, not a picture" * 5).decode())],
            HEADER,
            "not base64-encoded image",
        ),
        ([row(0), row(1, image="7")], HEADER, "row 1 shares the image of row 7"),
        ([row(0), row(1, image="0"), row(2, image="1")], HEADER, "row 2 shares the image of row 1"),
        ([row(0), row(0)], HEADER, "index 0 appears twice"),
        ([row("x")], HEADER, "index 'x' is not an integer"),
        ([row(0, answer="D", D="")], HEADER, "answer 'D' is not one of its options A, B, C"),
        ([row(0, B="", C="", D="")], HEADER, "row 0 has 1 option(s)"),
        ([row(0), row(2000005)], HEADER, "circular copy 2000005 has no main row 5"),
        ([], HEADER, "has no questions"),
    ],
)
def test_malformed_files_are_input_errors(tmp_path, rows, header, message):
    path = write_tsv(tmp_path / "bad.tsv", rows, header)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_mcq_tsv(path)


def test_ragged_and_missing_files(tmp_path):
    path = tmp_path / "ragged.tsv"
    path.write_text("\t".join(HEADER) + "\n0\tq\n")
    with pytest.raises(InputError, match="data line 2 has 2 cells"):
        load_mcq_tsv(path)
    with pytest.raises(InputError, match="does not exist"):
        load_mcq_tsv(tmp_path / "MMBench_DEV_EN.tsv")


def test_limit_keeps_circular_copies(tmp_path):
    data = load_mcq_tsv(synth_mmbench(tmp_path / "s.tsv", questions=6, seed=1))
    kept = limit_questions(data.rows, 2)
    mains = [r.index for r in kept if r.is_main]
    assert mains == [0, 1]
    assert {r.main_index for r in kept} == {0, 1}
    assert len(kept) == sum(len(r.options) for r in data.rows if r.index in (0, 1))


def test_synth_is_deterministic_and_mmbench_shaped(tmp_path):
    a = synth_mmbench(tmp_path / "a.tsv", questions=30, seed=3)
    b = synth_mmbench(tmp_path / "b.tsv", questions=30, seed=3)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != synth_mmbench(tmp_path / "c.tsv", questions=30, seed=4).read_bytes()
    data = load_mcq_tsv(a)
    mains = data.main_rows()
    assert len(mains) == 30
    assert {len(r.options) for r in mains} >= {2, 3, 4}
    assert any(r.hint for r in mains) and any(r.hint is None for r in mains)
    raw = {line.split("\t")[0]: line.split("\t")[9] for line in a.read_text().splitlines()[1:]}
    assert any(len(cell) <= 64 for index, cell in raw.items() if int(index) < 1_000_000)  # shared images
    # every rotation asks the same question with the same right answer text
    for r in data.rows:
        main = next(m for m in mains if m.index == r.main_index)
        assert r.options[r.answer] == main.options[main.answer]
        assert sorted(r.options.values()) == sorted(main.options.values())
    assert len(data.rows) == sum(len(m.options) for m in mains)
    assert not load_mcq_tsv(
        synth_mmbench(tmp_path / "t.tsv", questions=4, answers=False, split="test")
    ).has_answers
