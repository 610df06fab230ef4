"""The training engine shared by pretrain_sami, finetune and hq_adapter (models never import it).

`config` (dataclass configs from YAML + overrides), `optim` (param groups, lr schedule), `checkpoints`
(loop position, atomic saves, resume, final export), `metrics` (metrics.jsonl + trackers), `data`
(record datasets that skip and count unreadable images), `engine` (`Task`, `train`, the shared CLI)."""

from .checkpoints import TrainState, list_checkpoints
from .config import ConfigError, RunConfig, TrainConfig, TrainingError, load_config, save_config, to_dict
from .engine import Task, train
from .optim import per_process_batch

__all__ = [
    "ConfigError", "RunConfig", "TrainConfig", "load_config", "save_config", "to_dict",
    "Task", "TrainingError", "TrainState", "list_checkpoints", "train", "per_process_batch",
]
