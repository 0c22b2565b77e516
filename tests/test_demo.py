"""The README's first command, `vlq demo`, end to end on the shipped reference VLM (CPU)."""

import json

import pytest
from typer.testing import CliRunner

from vlq.cli import app


@pytest.mark.slow
@pytest.mark.timeout(600)  # a hang (as a prefetch deadlock once did) fails here instead of stalling CI
def test_demo_runs_end_to_end_then_reuses_its_stages(tmp_path):
    work_dir = tmp_path / "demo"
    first = CliRunner().invoke(app, ["demo", "--work-dir", str(work_dir), "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output)
    assert [s["status"] for s in summary["stages"]] == ["ran"] * 5
    assert summary["gate"]["passed"] and summary["error"] is None
    assert summary["accuracy"]["baseline"]["Overall"] >= 0.5  # the trained model, not chance (~0.04)
    config = json.loads((work_dir / "quantized" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "awq"
    assert (work_dir / "summary.md").is_file()
    generations = summary["generations"]
    assert generations["w4a16"]["quantized"] and not generations["16-bit"]["quantized"]
    assert all(g["new_tokens"] > 0 and g["text"].strip() for g in generations.values())

    again = CliRunner().invoke(app, ["demo", "--work-dir", str(work_dir), "--json"])
    assert again.exit_code == 0, again.output
    statuses = {s["name"]: s["status"] for s in json.loads(again.output)["stages"]}
    assert statuses == {**dict.fromkeys(statuses, "reused"), "gate": "ran"}  # the gate is recomputed, cheaply
