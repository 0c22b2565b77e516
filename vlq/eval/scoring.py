"""Circular scoring, accuracy tables in VLMEvalKit's layout, and the comparison with a baseline run.

Circular evaluation (MMBench): a question counts as correct only when the original and every
rotated copy (rows `index + k * 1_000_000`) are answered correctly. Accuracy is over the main
questions. The non-circular ("vanilla") accuracy looks at the main rows alone. Numbers are
fractions; a gate's `--max-drop` is in percentage points.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from vlq.errors import GateFailed
from vlq.eval.mmbench_data import McqRow

#: VLMEvalKit's `MMB_abbrs` (the l2-category values of the MMBench TSVs), plus the names MMBench's
#: paper uses for the same six ability groups.
L2_ABBREVIATIONS = {
    "coarse_perception": "CP",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
    "attribute_reasoning": "AR",
    "Coarse Perception": "CP",
    "Fine-grained Perception (single-instance)": "FP-S",
    "Fine-grained Perception (cross-instance)": "FP-C",
    "Logic Reasoning": "LR",
    "Relation Reasoning": "RR",
    "Attribute Reasoning": "AR",
}
KL_FLOOR = 1e-12


@dataclass(frozen=True)
class QuestionScore:
    """One main question: its groups and whether it was answered right (all rotations / main row)."""

    index: int
    category: str
    l2_category: str
    split: str
    circular_hit: bool
    vanilla_hit: bool
    rotations: int


def score_questions(rows: list[McqRow], choices: dict[int, str | None]) -> list[QuestionScore]:
    """Score every main question that has an answer; `choices` maps row index -> extracted letter."""
    groups: dict[int, list[McqRow]] = defaultdict(list)
    for row in rows:
        if row.answer is not None:
            groups[row.main_index].append(row)
    scores = []
    for row in rows:
        if not row.is_main or row.answer is None:
            continue
        group = groups[row.index]
        scores.append(
            QuestionScore(
                index=row.index,
                category=row.category,
                l2_category=row.l2_category,
                split=row.split,
                circular_hit=all(choices.get(r.index) == r.answer for r in group),
                vanilla_hit=choices.get(row.index) == row.answer,
                rotations=len(group),
            )
        )
    return scores


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else math.nan


def accuracy_table(scores: list[QuestionScore], circular: bool = True) -> dict[str, float]:
    """`Overall`, the ability groups (abbreviated, in order of their l2 names), then each category.

    The order and the abbreviations are VLMEvalKit's `report_acc`; l2 names it doesn't know keep
    their own name, two spellings of one group are pooled, and empty group names are left out.
    """

    def hit(score: QuestionScore) -> bool:
        return score.circular_hit if circular else score.vanilla_hit

    table = {"Overall": _mean([hit(s) for s in scores])}
    for attribute, names in (("l2_category", L2_ABBREVIATIONS), ("category", {})):
        hits: dict[str, list[bool]] = {}
        for name in sorted({getattr(s, attribute) for s in scores} - {""}):
            hits[names.get(name, name)] = []
        for s in scores:
            if getattr(s, attribute):
                hits[names.get(getattr(s, attribute), getattr(s, attribute))].append(hit(s))
        table.update((label, _mean(values)) for label, values in hits.items())
    return table


def acc_csv_rows(scores: list[QuestionScore]) -> list[dict[str, object]]:
    """One row per split: `split, Overall, <abilities>, <categories>`, VLMEvalKit's `_acc.csv` layout."""
    columns = list(accuracy_table(scores))
    rows = []
    for split in sorted({s.split for s in scores}):
        table = accuracy_table([s for s in scores if s.split == split])
        rows.append({"split": split, **{name: table.get(name, math.nan) for name in columns}})
    return rows


@dataclass
class BaselineComparison:
    """How a run differs from a baseline run of the same command on the same questions."""

    baseline: str
    common_rows: int
    #: Fraction of common rows whose extracted choice is the same (unmatched == unmatched counts).
    agreement: float
    #: Mean KL(baseline || this run) of the option-letter distributions; None without probabilities.
    mean_kl: float | None
    #: This run minus the baseline, per accuracy name (fractions).
    delta: dict[str, float]
    #: Percentage points the circular Overall dropped (negative: it rose).
    overall_drop_points: float
    max_drop: float | None = None
    passed: bool | None = None
    notes: list[str] = field(default_factory=list)


def kl_divergence(reference: dict[str, float], other: dict[str, float]) -> float:
    """KL(reference || other) over the union of letters, with probabilities floored at 1e-12."""
    total = 0.0
    for letter in set(reference) | set(other):
        p = max(reference.get(letter, 0.0), KL_FLOOR)
        q = max(other.get(letter, 0.0), KL_FLOOR)
        total += p * math.log(p / q)
    return total


def compare_runs(current: dict, baseline: dict, baseline_name: str) -> BaselineComparison:
    """Compare two result dicts (`rows` of index/choice/probs, and `metrics`) on their common rows."""
    notes = []
    if current.get("data_md5") != baseline.get("data_md5"):
        notes.append("the baseline was run on a different data file; compared on common indices")
    base_rows = {row["index"]: row for row in baseline.get("rows", [])}
    common = [(row, base_rows[row["index"]]) for row in current["rows"] if row["index"] in base_rows]
    agreement = _mean([row["choice"] == base["choice"] for row, base in common])
    with_probs = [
        (row["probs"], base["probs"]) for row, base in common if row.get("probs") and base.get("probs")
    ]
    mean_kl = sum(kl_divergence(b, c) for c, b in with_probs) / len(with_probs) if with_probs else None
    if common and mean_kl is None:
        notes.append("no KL divergence: option probabilities exist only when both runs used --mode logits")
    metrics, base_metrics = current.get("metrics") or {}, baseline.get("metrics") or {}
    delta = {name: metrics[name] - base_metrics[name] for name in metrics if name in base_metrics}
    drop = 100.0 * (base_metrics.get("Overall", math.nan) - metrics.get("Overall", math.nan))
    return BaselineComparison(baseline_name, len(common), agreement, mean_kl, delta, drop, notes=notes)


def apply_gate(comparison: BaselineComparison, max_drop: float) -> None:
    """Record the verdict: pass unless circular Overall dropped more than `max_drop` points."""
    comparison.max_drop = max_drop
    drop = comparison.overall_drop_points
    # fractions k/n turned into points carry float noise: a drop of exactly `max_drop` passes
    comparison.passed = not (math.isnan(drop) or drop > max_drop + 1e-9)


def gate_failure(comparison: BaselineComparison) -> GateFailed:
    """The one-line error for a failed gate (raised after the result files are written)."""
    return GateFailed(
        f"MMBench Overall dropped {comparison.overall_drop_points:.2f} points against {comparison.baseline} "
        f"(--max-drop {comparison.max_drop:g})"
    )
