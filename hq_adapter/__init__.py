"""HQ-SAM adapter training (`python -m hq_adapter.train`): HQSeg-44K data, losses, the trainer.

The HQ model itself lives in the library (`efficient_sam.hq`); its names are re-exported here."""

from efficient_sam.hq import adapter_state_dict, base_view, build_hq_model, default_early_block, is_adapter_key, save_adapter

__all__ = ["build_hq_model", "base_view", "default_early_block", "is_adapter_key", "adapter_state_dict", "save_adapter"]
