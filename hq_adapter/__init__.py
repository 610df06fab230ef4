"""HQ-SAM adapter on SAM and EfficientSAM: `build_hq_model`, official checkpoints, training."""

from .model import adapter_state_dict, base_view, build_hq_model, default_early_block, is_adapter_key, save_adapter

__all__ = ["build_hq_model", "base_view", "default_early_block", "is_adapter_key", "adapter_state_dict", "save_adapter"]
