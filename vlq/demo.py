"""`vlq demo`: the built-in default job, end to end, offline, on any machine.

A recipe run (`recipes/demo.yaml`, kept equal to `vlq.run.demo_recipe`): the built-in model
-> AWQ on the shipped calibration text -> vision encoder to ONNX with onnxruntime parity ->
MMBench-format evaluation of the 16-bit and the 4-bit model -> accuracy gate -> summary. Then the
4-bit folder is loaded back through vlq's int4 runner and generates next to the 16-bit model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vlq.generate import GenerateResult, generate
from vlq.run import RunSummary, demo_recipe, resolve_model, run_demo_recipe

DEMO_PROMPT = "the company said"


@dataclass
class DemoResult:
    summary: RunSummary
    source: Path
    quantized: Path
    fp16_generation: GenerateResult
    w4_generation: GenerateResult


def run_demo(
    work_dir: str | Path = "vlq-demo",
    force: bool = False,
    device: str = "auto",
    hooks: dict[str, Callable] | None = None,
) -> DemoResult:
    """Run the demo recipe in `work_dir`, then generate with both models. `hooks` draw progress."""
    summary = run_demo_recipe(work_dir, force, device, **(hooks or {}))
    source = Path(resolve_model(demo_recipe(work_dir, device), Path(work_dir)))
    quantized = Path(summary.out_dir) / "quantized"
    fp16 = generate(str(source), DEMO_PROMPT, max_new_tokens=16, device=device)
    w4 = generate(str(quantized), DEMO_PROMPT, max_new_tokens=16, device=device)
    return DemoResult(summary, source, quantized, fp16, w4)
