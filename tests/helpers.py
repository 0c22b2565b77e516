"""Plain helpers shared by test modules (pytest puts this folder on sys.path)."""

from pathlib import Path

import torch
from safetensors.torch import load_file


def checkpoint_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's safetensors shards, read with safetensors itself (not vlq's reader)."""
    tensors = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors
