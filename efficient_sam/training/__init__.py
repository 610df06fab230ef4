"""The training engine shared by pretrain_sami, finetune and hq_adapter (models never import it)."""

from .config import ConfigError, RunConfig, TrainConfig, load_config, save_config, to_dict
from .engine import Task, TrainingError, TrainState, list_checkpoints, train

__all__ = [
    "ConfigError", "RunConfig", "TrainConfig", "load_config", "save_config", "to_dict",
    "Task", "TrainingError", "TrainState", "list_checkpoints", "train",
]
