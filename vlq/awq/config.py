"""The `quantization_config` written to config.json: field names are the Hugging Face keys."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AwqQuantizationConfig:
    """AutoAWQ's GEMM format, as transformers, vLLM, LMDeploy and AutoAWQ read it."""

    bits: int = 4
    group_size: int = 128
    zero_point: bool = True
    version: str = "gemm"
    modules_to_not_convert: tuple[str, ...] = ()
    quant_method: str = "awq"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["modules_to_not_convert"] = list(self.modules_to_not_convert)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> AwqQuantizationConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["modules_to_not_convert"] = tuple(known.get("modules_to_not_convert") or ())
        if "version" not in known and "format" in data:
            known["version"] = data["format"]
        return cls(**known)
