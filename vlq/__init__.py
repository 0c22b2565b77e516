"""vlq: make vision-language models small and fast without losing accuracy."""

__version__ = "0.1.1"


def load_quantized(path, device: str = "auto"):
    """The transformers model of an AutoAWQ-format folder, its linears run by vlq's int4 runner."""
    from vlq.loading import load_quantized as _load_quantized

    return _load_quantized(path, device)
