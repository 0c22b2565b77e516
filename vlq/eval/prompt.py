"""The question prompt, exactly as VLMEvalKit's default MCQ prompt (`ImageMCQDataset.build_prompt`).

The trailing space after "above." is VLMEvalKit's; published MMBench numbers were measured with
it, so it stays.
"""

from __future__ import annotations

from vlq.eval.mmbench_data import McqRow

INSTRUCTION = "Please select the correct answer from the options above. \n"


def build_prompt(row: McqRow) -> str:
    prompt = f"Hint: {row.hint}\n" if row.hint is not None else ""
    prompt += f"Question: {row.question}\n"
    if row.options:
        prompt += "Options:\n" + "".join(f"{letter}. {text}\n" for letter, text in row.options.items())
        prompt += INSTRUCTION
    return prompt


def build_messages(prompt: str) -> list[dict]:
    """One user turn, image first (as VLMEvalKit sends it), for `processor.apply_chat_template`."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
