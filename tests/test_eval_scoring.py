"""Circular scoring, VLMEvalKit's accuracy layout, baseline comparison and the gate."""

import math

import pytest

from vlq.eval.mmbench_data import McqRow
from vlq.eval.outputs import write_acc_csv
from vlq.eval.scoring import (
    acc_csv_rows,
    accuracy_table,
    apply_gate,
    compare_runs,
    gate_failure,
    kl_divergence,
    score_questions,
)


def mcq(index, answer="A", category="c1", l2="logic_reasoning", split="dev", n=4):
    options = {letter: f"opt{letter}" for letter in "ABCD"[:n]}
    return McqRow(index, "q", None, options, answer, category, l2, split, cells={})


def group(main, answers):
    """A main row and its rotations, answer letters given per row."""
    return [mcq(main + k * 1_000_000, a) for k, a in enumerate(answers)]


def test_a_question_counts_only_when_every_rotation_is_right():
    rows = group(0, "ABCD") + group(1, "BCDA") + group(2, "CD")
    choices = {r.index: r.answer for r in rows}
    choices[1_000_001] = "A"  # one rotation of question 1 wrong
    choices[2_000_001] = None  # ...question 1 right on its main row only
    choices[1_000_002] = None  # question 2: a rotation unmatched
    scores = {s.index: s for s in score_questions(rows, choices)}
    assert scores[0].circular_hit and scores[0].vanilla_hit and scores[0].rotations == 4
    assert not scores[1].circular_hit and scores[1].vanilla_hit
    assert not scores[2].circular_hit and scores[2].vanilla_hit and scores[2].rotations == 2
    table = accuracy_table(list(scores.values()))
    assert table["Overall"] == pytest.approx(1 / 3)
    assert accuracy_table(list(scores.values()), circular=False)["Overall"] == 1.0


def test_refusals_and_rows_without_answers():
    rows = [mcq(0), mcq(1, answer=None), mcq(1_000_000, answer="B")]
    scores = score_questions(rows, {0: "A", 1: "A", 1_000_000: "Z"})
    assert [s.index for s in scores] == [0]  # question 1 has no answer: not scored
    assert not scores[0].circular_hit


def test_accuracy_table_order_and_abbreviations_follow_vlmevalkit():
    l2s = [
        "relation_reasoning",
        "attribute_reasoning",
        "coarse_perception",
        "logic_reasoning",
        "finegrained_perception (instance-level)",
        "finegrained_perception (cross-instance)",
        "Logic Reasoning",
    ]
    rows = [mcq(i, category=f"cat{9 - i}", l2=l2) for i, l2 in enumerate(l2s)]
    choices = {r.index: ("A" if r.index % 2 == 0 else "B") for r in rows}
    table = accuracy_table(score_questions(rows, choices))
    assert list(table) == [
        "Overall",
        "LR",
        "AR",
        "CP",
        "FP-C",
        "FP-S",
        "RR",
        "cat3",
        "cat4",
        "cat5",
        "cat6",
        "cat7",
        "cat8",
        "cat9",
    ]
    assert table["LR"] == 0.5  # both spellings of logic reasoning pooled: row 3 wrong, row 6 right
    assert table["Overall"] == pytest.approx(4 / 7)


def test_acc_csv_has_one_row_per_split_in_vlmevalkit_layout(tmp_path):
    rows = [mcq(0, split="dev"), mcq(1, split="dev", category="c2"), mcq(2, split="test")]
    scores = score_questions(rows, {0: "A", 1: "B", 2: "A"})
    table = acc_csv_rows(scores)
    assert [r["split"] for r in table] == ["dev", "test"]
    assert table[0]["Overall"] == 0.5 and table[1]["Overall"] == 1.0
    assert math.isnan(table[1]["c2"])
    write_acc_csv(tmp_path / "x_acc.csv", table)
    lines = (tmp_path / "x_acc.csv").read_text().splitlines()
    assert lines[0] == '"split","Overall","LR","c1","c2"'
    assert lines[1] == '"dev","0.5","0.5","1.0","0.0"'
    assert lines[2] == '"test","1.0","1.0","1.0",""'


def result(choices, overall, probs=None, md5="m"):
    rows = [{"index": i, "choice": c, "probs": (probs or {}).get(i)} for i, c in choices.items()]
    return {"data_md5": md5, "rows": rows, "metrics": {"Overall": overall, "LR": overall}}


def test_kl_divergence_known_values():
    assert kl_divergence({"A": 1.0}, {"A": 0.5, "B": 0.5}) == pytest.approx(math.log(2))
    assert kl_divergence({"A": 0.3, "B": 0.7}, {"A": 0.3, "B": 0.7}) == pytest.approx(0.0)


def test_compare_runs_agreement_kl_and_delta():
    base = result({0: "A", 1: "B", 2: None, 3: "C"}, 0.80, {0: {"A": 1.0, "B": 0.0}, 1: {"A": 0.5, "B": 0.5}})
    now = result({0: "A", 1: "A", 2: None, 5: "D"}, 0.75, {0: {"A": 0.5, "B": 0.5}, 1: {"A": 0.5, "B": 0.5}})
    comparison = compare_runs(now, base, "base.json")
    assert comparison.common_rows == 3
    assert comparison.agreement == pytest.approx(2 / 3)  # unmatched in both counts as agreement
    assert comparison.mean_kl == pytest.approx(math.log(2) / 2)
    assert comparison.delta == {"Overall": pytest.approx(-0.05), "LR": pytest.approx(-0.05)}
    assert comparison.overall_drop_points == pytest.approx(5.0)
    assert comparison.notes == []


def test_no_kl_without_probabilities_and_a_note_on_other_data():
    comparison = compare_runs(result({0: "A"}, 0.5, md5="x"), result({0: "A"}, 0.5, md5="y"), "b")
    assert comparison.mean_kl is None
    assert any("different data file" in n for n in comparison.notes)
    assert any("logits" in n for n in comparison.notes)


@pytest.mark.parametrize(
    "now, max_drop, passed",
    [(0.79, 1.0, True), (0.78999, 1.0, False), (0.70, 10.0, True), (0.85, 0.0, True), (0.7999, 0.0, False)],
)
def test_gate_threshold_is_in_points(now, max_drop, passed):
    comparison = compare_runs(result({0: "A"}, now), result({0: "A"}, 0.80), "b.json")
    apply_gate(comparison, max_drop)
    assert comparison.passed is passed
    assert comparison.max_drop == max_drop
    if not passed:
        error = gate_failure(comparison)
        assert error.exit_code == 4 and "dropped" in str(error)
