"""EfficientSAM fine-tuning: `accelerate launch -m finetune.train --config finetune/configs/efficient_sam_vitt.yaml [key.sub=value ...]`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn

from efficient_sam.checkpoint import CheckpointError
from efficient_sam.training.config import ConfigError, RunConfig, TrainConfig, check, check_min
from efficient_sam.training.engine import Task
from efficient_sam.training.engine import main as engine_main

from .data import (
    DataConfig, RecordSamples, SampleBuilder, StreamingSamples, collate, count_sa1b_images, open_records,
    open_sa1b_stream, sa1b_shards,
)
from .losses import LossConfig
from .model import InteractiveSam, ModelConfig, build_finetune_model, finetune_config
from .prompt_simulation import PromptConfig


def _paper_train() -> TrainConfig:
    """EfficientSAM §4: AdamW (0.9, 0.999), lr 4e-4, linear decay, wd 0.1, batch 128, 5 epochs."""
    return TrainConfig(
        epochs=5, batch_size=2, global_batch_size=128, lr=4e-4, optimizer="adamw", betas=(0.9, 0.999),
        weight_decay=0.1, lr_schedule="linear", warmup_steps=250, save_every=1000,
    )


@dataclass
class FinetuneConfig(RunConfig):
    output_dir: str = "runs/finetune"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=_paper_train)

    def validate(self) -> None:
        super().validate()
        d = self.data
        if d.streaming not in ("auto", "true", "false"):
            raise ConfigError(f"data.streaming must be auto, true or false, not {d.streaming!r}")
        for p in d.eval_prompts:
            if p not in ("box", "point", "points3"):
                raise ConfigError(f"data.eval_prompts: unknown prompt {p!r} (box, point, points3)")
        check_min(d, "data.", num_train_examples=1, shuffle_buffer=0, shard_size=1, max_images=1, max_masks=1,
                  mask_size=1, max_val_images=0)
        check(0 < d.max_mask_area <= 1, "data.max_mask_area", d.max_mask_area, "must be a fraction in (0, 1]")


def _streaming(cfg: DataConfig, layout: str) -> bool:
    mode = cfg.streaming
    if mode not in ("auto", "true", "false"):
        raise ConfigError(f"data.streaming must be auto, true or false, not {cfg.streaming!r}")
    if mode == "true" and layout != "sa1b":
        raise ConfigError(f"data.streaming=true needs SA-1B data; {cfg.train} is a {layout!r} dataset")
    return mode == "true" or (mode == "auto" and layout == "sa1b")


class FinetuneTask(Task):
    cfg: FinetuneConfig

    def setup(self, acc: Accelerator) -> None:
        from efficient_sam.datasets import detect_layout

        cfg = self.cfg
        try:
            self.model_cfg = finetune_config(cfg.model)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"model: {e}") from e
        builder = SampleBuilder(self.model_cfg, cfg.data, cfg.prompt)
        try:
            layout = detect_layout(cfg.data.train) if cfg.data.layout == "auto" else cfg.data.layout
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"data.train: {e}") from e
        self.n_train = None
        if _streaming(cfg.data, layout):
            from datasets.distributed import split_dataset_by_node

            if cfg.data.max_images is not None:
                raise ConfigError("data.max_images applies to map-style data; use train.max_steps when streaming")
            stream = open_sa1b_stream(cfg.data.train, cfg.data.shard_size)
            self.n_train = cfg.data.num_train_examples or count_sa1b_images(sa1b_shards(cfg.data.train, cfg.data.shard_size))
            stream = split_dataset_by_node(stream, acc.process_index, acc.num_processes)
            self.train_set = StreamingSamples(stream, builder, cfg.seed, cfg.data.shuffle_buffer)
        else:
            with acc.main_process_first():
                records = open_records(cfg.data.train, layout, cfg.data.max_images)
            self.train_set = RecordSamples(records, builder, cfg.seed)
        self.val = None
        if cfg.data.val:
            try:
                self.val = open_records(cfg.data.val, "auto", cfg.data.max_val_images)
            except (FileNotFoundError, ValueError) as e:
                raise ConfigError(f"data.val: {e}") from e

    def build_model(self) -> nn.Module:
        try:
            sam = build_finetune_model(self.cfg.model)
            return InteractiveSam(sam, self.cfg.prompt, self.cfg.loss)
        except (KeyError, TypeError, ValueError, OSError, CheckpointError) as e:  # incl. a file that does not fit
            raise ConfigError(f"model: {e}") from e

    def train_dataset(self):
        return self.train_set

    def collate_fn(self):
        return collate

    def num_train_examples(self) -> int | None:
        return self.n_train

    def training_step(self, model, batch):
        losses = model(batch)
        counts = {"skipped_images": int(batch["skipped"]), "masks": int(batch["masks"].shape[0])}
        return losses, counts

    def no_weight_decay(self) -> tuple[str, ...]:
        return ("pos_embed", "iou_token", "mask_tokens", "point_embeddings", "not_a_point_embed", "no_mask_embed")

    def num_layers(self) -> int:
        return self.model_cfg.image_encoder.depth + 1

    def layer_id(self, name: str) -> int:
        """Layer-wise lr decay: patch/position embedding 0, encoder block i -> i + 1, neck and the
        prompt encoder / mask decoder at the top (full lr)."""
        name = name.removeprefix("sam.")
        if name.startswith("image_encoder.patch_embed") or name.startswith("image_encoder.pos_embed"):
            return 0
        if name.startswith("image_encoder.blocks."):
            return int(name.split(".")[2]) + 1
        return self.num_layers()

    @torch.no_grad()
    def evaluate(self, model: InteractiveSam, acc: Accelerator) -> dict[str, float]:
        """esam-eval's protocol (benchmarks.evaluate) on data.val: mIoU per prompt type, the images
        split over the processes."""
        if not self.val:
            return {}
        from efficient_sam.evaluation import PredictorModel, evaluate_distributed

        out = {}
        for prompt in self.cfg.data.eval_prompts:
            res = evaluate_distributed(PredictorModel(model.sam), self.val, prompt, self.cfg.seed, acc)
            out[f"miou_{prompt}"], out[f"mbiou_{prompt}"] = res["miou"], res["mbiou"]
        return out

    def save_final(self, model: InteractiveSam, path: Path) -> None:
        """The whole model in our format (`es.from_pretrained(path)`, `SamPredictor`, `esam-eval`)."""
        model.sam.save_pretrained(path)


def main(argv: list[str] | None = None) -> None:
    engine_main(FinetuneConfig, FinetuneTask, __doc__, argv)


if __name__ == "__main__":
    main()
