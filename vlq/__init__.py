"""vlq: make vision-language models small and fast without losing accuracy."""

__version__ = "0.1.0"
