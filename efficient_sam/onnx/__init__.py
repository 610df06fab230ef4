"""ONNX deployment: `esam-export` (`efficient_sam.onnx.export.export_model`, needs torch, onnx and
onnxscript) writes encoder.onnx + decoder.onnx + config.json; `OnnxSamPredictor` runs such a folder with
only numpy, pillow and onnxruntime (the `[onnx]` extra; importable without torch).

This package never imports torch itself: `export_model` / `ExportError` are loaded from
`efficient_sam.onnx.export` on first access.
"""

from __future__ import annotations

from .format import ExportFormatError, read_config
from .predictor import OnnxSamPredictor

__all__ = ["OnnxSamPredictor", "ExportFormatError", "read_config", "export_model", "ExportError"]


def __getattr__(name: str):
    if name in ("export_model", "ExportError"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
