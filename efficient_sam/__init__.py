"""Efficient Segment Anything models: SAM (ViT-H/L/B) and EfficientSAM (ViT-Ti/S), one implementation.

Layers, each importing only those before it: `config`, `errors` <- `registry` <- `modeling` <-
`checkpoint` <- `hub` <- `build` <- `hq` <- `transforms`, `predictor` <- the rest (`datasets`,
`evaluation`, `training`, `tools`). Trainers and benchmarks build on the package; it never imports them.
"""

try:  # the models need torch; `efficient_sam.onnx.OnnxSamPredictor` (the [onnx] extra) does not
    import torch as _torch  # noqa: F401
except ImportError as _e:
    _TORCH_MISSING = _e
else:
    _TORCH_MISSING = None
    from .build import build_model
    from .checkpoint import CheckpointError, load_checkpoint
    from .config import HQConfig, ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig
    from .hq import build_hq_model
    from .hub import from_pretrained
    from .modeling.sam import Sam
    from .predictor import SamPredictor
    from .automatic_mask_generator import SamAutomaticMaskGenerator
    from .registry import get_config, list_models

__all__ = [
    "build_model", "build_hq_model", "get_config", "list_models", "load_checkpoint", "CheckpointError",
    "from_pretrained", "SamConfig", "HQConfig", "ImageEncoderConfig", "PromptEncoderConfig",
    "MaskDecoderConfig", "Sam", "SamPredictor", "SamAutomaticMaskGenerator",
]


def __getattr__(name: str):
    if _TORCH_MISSING is not None and name in __all__:  # a torch-free install: only efficient_sam.onnx works
        raise ImportError(
            f"efficient_sam.{name} needs torch, which cannot be imported here ({_TORCH_MISSING}); install torch, "
            f"or run an esam-export folder with efficient_sam.onnx.OnnxSamPredictor"
        ) from _TORCH_MISSING
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
