"""Efficient Segment Anything models: SAM (ViT-H/L/B) and EfficientSAM (ViT-Ti/S), one implementation."""

from .build import build_model, get_config, list_models
from .checkpoint import CheckpointError, load_checkpoint
from .config import HQConfig, ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig
from .hub import from_pretrained
from .modeling.sam import Sam
from .predictor import SamPredictor

__all__ = [
    "build_model", "get_config", "list_models", "load_checkpoint", "CheckpointError", "from_pretrained",
    "SamConfig", "HQConfig", "ImageEncoderConfig", "PromptEncoderConfig", "MaskDecoderConfig",
    "Sam", "SamPredictor",
]
