"""The dtype names of the command-line tools (`--dtype fp32|fp16|bf16`)."""

from __future__ import annotations

import torch

__all__ = ["DTYPES"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
