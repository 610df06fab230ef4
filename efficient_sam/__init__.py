"""Efficient Segment Anything models: SAM (ViT-H/L/B) and EfficientSAM (ViT-Ti/S), one implementation.

Layers, each importing only those before it: `config`, `errors` <- `registry` <- `modeling` <-
`checkpoint` <- `hub` <- `build` <- `hq` <- `transforms`, `predictor` <- the rest (`datasets`,
`evaluation`, `training`, `tools`). Trainers and benchmarks build on the package; it never imports them.
"""

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
