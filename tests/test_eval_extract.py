"""Answer extraction: VLMEvalKit's exact-matching rules on a table of real-looking outputs."""

import pytest

from vlq.eval.extract import extract_choice, infer_option, infer_text

COLOURS = {"A": "red", "B": "blue", "C": "green", "D": "yellow"}
YES_NO = {"A": "Yes", "B": "No"}
CORNERS = {"A": "4", "B": "3", "C": "0"}
ANIMALS = {"A": "dog", "B": "cat", "C": "bird", "D": "fish"}

CASES = [
    # a bare letter, with the punctuation VLMEvalKit strips
    ("A", COLOURS, "A"),
    ("B.", COLOURS, "B"),
    ("(C)", COLOURS, "C"),
    ("[D]", COLOURS, "D"),
    ("**C**", COLOURS, "C"),
    ("\n\nB\n", COLOURS, "B"),
    ("Answer: B", COLOURS, "B"),
    ("D. yellow", COLOURS, "D"),
    ("The answer is D.", COLOURS, "D"),
    ("The correct answer is **C**", COLOURS, "C"),
    # a letter far from the end reads as the article "A": not an answer...
    ("A cat is sitting on the mat", COLOURS, None),
    ("I think it is A because the colour of the square looks like red to me", COLOURS, None),
    # ...unless "answer is X" says so
    ("The answer is C, because the square in the picture is clearly a bright green", COLOURS, "C"),
    # two letters, or two option texts: ambiguous
    ("A and B", COLOURS, None),
    ("A. red B. blue", COLOURS, None),
    ("It is blue or green", COLOURS, None),
    # option text when no letter: unique substring, case-insensitive, with the length guard
    ("blue", COLOURS, "B"),
    ("BLUE", COLOURS, "B"),
    ("The square is green.", COLOURS, "C"),
    ("3", CORNERS, "B"),
    ("There are 3 corners.", CORNERS, None),  # longer than twice the option texts together
    ("No", YES_NO, "B"),
    ("Yes.", YES_NO, "A"),
    # a letter that is not an option of this question
    ("C", YES_NO, None),
    ("a", COLOURS, None),
    # refusals and API failures
    ("Cannot determine the answer", COLOURS, "Z"),
    ("Z", COLOURS, "Z"),
    ("Failed to obtain answer via API", COLOURS, None),
    ("", COLOURS, None),
    ("nan", COLOURS, None),
    # VLMEvalKit's case-insensitive "answer is X" reads the first letter of a word: kept as is
    ("the answer is cat", ANIMALS, "C"),
]


@pytest.mark.parametrize("prediction, options, expected", CASES)
def test_extraction_table(prediction, options, expected):
    assert extract_choice(prediction, dict(options)) == expected


def test_letter_rule_counts_only_the_last_four_tokens():
    assert infer_option("x x x A", ("A", "B")) == "A"  # 4 tokens: index 3 of 4
    assert infer_option("A x x x", ("A", "B")) == "A"  # index 0 > 4 - 5
    assert infer_option("A x x x x", ("A", "B")) is None  # index 0, 5 tokens: too far from the end


def test_text_rule_needs_a_unique_option():
    assert infer_text("red and yellow", COLOURS) is None
    assert infer_text("yellow", COLOURS) == "D"


def test_non_string_predictions_are_read_as_text():
    assert extract_choice(3, dict(CORNERS)) == "B"
