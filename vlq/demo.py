"""`vlq demo`: the built-in default job, end to end on a tiny VLM generated locally.

Generate a LLaVA-shaped checkpoint, quantize it with AWQ on the shipped calibration text, load
the 4-bit folder back with vlq's int4 runner and generate: proof, on any machine and offline,
that the whole path works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vlq.awq.pipeline import AutoAwqOptions, AutoAwqResult, auto_awq
from vlq.generate import GenerateResult, generate
from vlq.output import check_work_dir
from vlq.tiny import build_tiny_llava

DEMO_PROMPT = "the company said"


@dataclass
class DemoResult:
    work_dir: Path
    source: Path
    quantized: AutoAwqResult
    fp16_generation: GenerateResult
    w4_generation: GenerateResult
    stages: list[str] = field(default_factory=list)


def run_demo(
    work_dir: str | Path = "vlq-demo",
    force: bool = False,
    device: str = "auto",
    on_stage: Callable[[str], None] = lambda stage: None,
    on_start: Callable[[int], None] = lambda n: None,
    on_layer: Callable = lambda report: None,
) -> DemoResult:
    work = Path(work_dir)
    check_work_dir(work, force)
    work.mkdir(parents=True, exist_ok=True)
    source = work / "tiny-llava"
    on_stage(f"generating a tiny LLaVA checkpoint in {source}")
    build_tiny_llava(source)
    on_stage("quantizing its language model with AWQ (w4, group 128) on the shipped ptb text")
    options = AutoAwqOptions(
        model=str(source), work_dir=str(work / "tiny-llava-w4a16"), calib_dataset="ptb", calib_samples=32,
        calib_seqlen=256, w_group_size=128, search_scale=True, device=device, force=True,
    )
    quantized = auto_awq(options, on_start=on_start, on_layer=on_layer)
    on_stage("generating with the 16-bit and the 4-bit model")
    fp16 = generate(str(source), DEMO_PROMPT, max_new_tokens=16, device=device)
    w4 = generate(str(quantized.output_dir), DEMO_PROMPT, max_new_tokens=16, device=device)
    return DemoResult(work, source, quantized, fp16, w4)
