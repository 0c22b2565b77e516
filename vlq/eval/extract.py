"""Which option a free-form answer picks: VLMEvalKit's exact-matching rules, no LLM judge.

Re-implemented from VLMEvalKit's `vlmeval/utils/matching_util.py` (`can_infer`,
`can_infer_option`, `can_infer_text`) as of VLMEvalKit main at commit e8e78f05 (2026-08-18,
`git describe`: v0.3rc1-342; the file last changed in a67ace50 "Match verbose Chain-of-Thought"):

1. A known API failure is unmatched; a known refusal ("Cannot determine the answer", ...) is `Z`.
2. Replace each of `.()[],:;!*#{}` by a space and split on whitespace. If exactly one option letter
   is a whole token, and it is among the last four tokens, it is the answer (a letter further
   from the end is more likely the article "A" of a sentence). No letter but a `Z` token: `Z`.
3. Otherwise "answer is X" / "correct answer is **X**" (case-insensitive, X in A-D and an option).
4. Otherwise, if the answer is at most twice as long as all option texts together, the option
   whose text (lower-cased) is the only one contained in the answer.

Rule 3 keeps VLMEvalKit's quirk: being case-insensitive, "the answer is blue" reads as "B" when B
is an option. `Z` never equals an answer letter, so it scores as wrong without being "unmatched".
VLMEvalKit's `VERBOSE` environment switch (which only changes logging and one rejection) is not
reproduced: vlq behaves as VLMEvalKit does with `VERBOSE` unset.
"""

from __future__ import annotations

import re

REFUSED = "Z"
API_FAILURE = "Failed to obtain answer via API"
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_PUNCTUATION_TO_SPACE = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
#: A lone letter counts only among the last `_LETTER_NEAR_END` tokens (VLMEvalKit: index > len - 5).
_LETTER_NEAR_END = 4


def infer_option(answer: str, letters: list[str] | tuple[str, ...]) -> str | None:
    """The option letter named in `answer` (rules 1-3), `Z` for a refusal, None when none is."""
    if API_FAILURE in answer:
        return None
    if any(refusal in answer for refusal in REFUSALS):
        return REFUSED
    words = answer.translate(_PUNCTUATION_TO_SPACE).split()
    named = [letter for letter in letters if letter in words]
    if len(named) == 1:
        if words.index(named[0]) >= len(words) - _LETTER_NEAR_END:
            return named[0]
    elif not named and REFUSED in words:
        return REFUSED
    match = _ANSWER_IS.search(answer)
    if match and match.group(1).upper() in letters:
        return match.group(1).upper()
    return None


def infer_text(answer: str, options: dict[str, str]) -> str | None:
    """The only option whose text appears in `answer` (rule 4), None when zero or several do."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(text) for text in options.values()):
        return None
    found = [letter for letter, text in options.items() if text.lower() in answer]
    return found[0] if len(found) == 1 else None


def extract_choice(answer: object, options: dict[str, str]) -> str | None:
    """The letter `answer` picks among `options` (letter -> text), `Z` if it refuses, None if unmatched."""
    answer = str(answer)
    return infer_option(answer, tuple(options)) or infer_text(answer, options)
