"""SAMI pretraining: `accelerate launch -m pretrain_sami.train --config pretrain_sami/configs/vit_tiny.yaml [key.sub=value ...]`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

import efficient_sam as es
from efficient_sam.checkpoint import load_strict
from efficient_sam.modeling.image_encoder import ImageEncoderViT
from efficient_sam.training.config import ConfigError, RunConfig, TrainConfig, check, check_min
from efficient_sam.training.engine import Task
from efficient_sam.training.engine import main as engine_main
from efficient_sam.training.optim import per_process_batch

from .data import EvalViews, ImageFolderViews, StreamingImageViews, collate, open_image_folder
from .feature_cache import CachedViews, CacheMismatchError, build_cache, weights_digest
from .model import SAMI, sami_loss
from .teacher import Teacher, load_teacher_encoder, normalize_target


@dataclass
class TeacherConfig:
    model: str = "sam_vit_h"  # registry name: the architecture
    checkpoint: str | None = None  # any es.from_pretrained source; None = random weights (smoke only)
    overrides: dict[str, Any] = field(default_factory=dict)  # flat model overrides, e.g. {encoder_depth: 2}
    target: str = "pre_neck"  # pre_neck (last block, 1280-d for ViT-H) | neck (256-d SAM embedding)
    normalize_target: bool = False  # per-token standardisation of the target; the paper uses plain MSE
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32


@dataclass
class StudentConfig:
    model: str = "efficient_sam_vitt"  # its image encoder is the student
    overrides: dict[str, Any] = field(default_factory=dict)
    init: str | None = None  # start from these encoder weights (e.g. a previous final/)


@dataclass
class SamiModelConfig:
    mask_ratio: float = 0.75
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    decoder_kv: str = "visible_and_masked"  # | visible


@dataclass
class SamiDataConfig:
    train: str = "data/imagenet/train"
    val: str | None = None
    streaming: bool = False  # stream the folder (huge trees); needs train.max_steps or num_train_examples
    num_train_examples: int | None = None  # for epoch arithmetic when streaming
    input_size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    max_val_images: int | None = 256


@dataclass
class CacheConfig:
    enabled: bool = False
    dir: str | None = None  # default: <output_dir>/teacher_cache
    views: int = 1  # fixed views per image (each epoch uses all of them)
    shard_rows: int = 2048  # views per safetensors shard


def _paper_train() -> TrainConfig:
    return TrainConfig(
        epochs=400, warmup_epochs=40, batch_size=256, global_batch_size=4096, blr=1.5e-4,
        optimizer="adamw", betas=(0.9, 0.95), weight_decay=0.05, lr_schedule="cosine", save_every=1000,
    )


@dataclass
class SamiConfig(RunConfig):
    output_dir: str = "runs/sami"
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    model: SamiModelConfig = field(default_factory=SamiModelConfig)
    data: SamiDataConfig = field(default_factory=SamiDataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    train: TrainConfig = field(default_factory=_paper_train)

    def validate(self) -> None:
        super().validate()
        if self.teacher.dtype not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"teacher.dtype must be auto, bf16 or fp32, not {self.teacher.dtype!r}")
        d = self.data
        if d.input_size <= 0 or d.input_size % 16:
            raise ConfigError(f"data.input_size must be a multiple of the 16-px patch, got {d.input_size}")
        check_min(d, "data.", num_train_examples=1, max_val_images=0)
        check(0 <= d.hflip <= 1, "data.hflip", d.hflip, "must be a probability in [0, 1]")
        check(0 < d.scale[0] <= d.scale[1], "data.scale", d.scale, "expected 0 < min <= max (crop area fractions)")
        check(0 < d.ratio[0] <= d.ratio[1], "data.ratio", d.ratio, "expected 0 < min <= max (aspect ratios)")
        check(0 <= self.model.mask_ratio < 1, "model.mask_ratio", self.model.mask_ratio, "must be in [0, 1)")
        check_min(self.cache, "cache.", views=1, shard_rows=1)


class SamiTask(Task):
    cfg: SamiConfig

    def setup(self, acc: Accelerator) -> None:
        cfg = self.cfg
        self.acc = acc
        tdtype = {"auto": torch.bfloat16 if acc.device.type == "cuda" else None, "bf16": torch.bfloat16, "fp32": None}
        try:  # unknown model name or override, wrong target, a checkpoint that does not fit
            enc = load_teacher_encoder(cfg.teacher.model, cfg.teacher.checkpoint, cfg.teacher.overrides)
            self.teacher = Teacher(enc, cfg.teacher.target, tdtype[cfg.teacher.dtype]).to(acc.device)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"teacher: {e}") from e
        self.grid = cfg.data.input_size // enc.cfg.patch_size
        n_tok = self.grid**2
        with acc.main_process_first():
            try:
                self.train_hf = open_image_folder(cfg.data.train, streaming=cfg.data.streaming)
            except FileNotFoundError as e:  # no such folder, or no images in it
                raise ConfigError(f"data.train: {e}") from e
            try:
                val_hf = open_image_folder(cfg.data.val) if cfg.data.val else None
            except FileNotFoundError as e:
                raise ConfigError(f"data.val: {e}") from e
        self.val = (
            EvalViews(val_hf, cfg.data.input_size, n_tok, cfg.seed, cfg.data.max_val_images) if val_hf is not None else None
        )
        # The teacher is frozen: its held-out tokens are computed at the first evaluation and kept (fp16).
        self._val_targets: list[torch.Tensor | None] = [None] * (len(self.val) if self.val is not None else 0)
        view_kw = dict(scale=cfg.data.scale, ratio=cfg.data.ratio, hflip=cfg.data.hflip)
        if cfg.cache.enabled:
            if cfg.data.streaming:
                raise ConfigError("cache.enabled needs a map-style folder (data.streaming=false)")
            warnings.warn(
                f"teacher cache on: each image gets {cfg.cache.views} fixed view(s) computed once; these replace "
                "the random crops of every epoch (masks still change)", stacklevel=1
            )
            cache_dir = Path(cfg.cache.dir or Path(cfg.output_dir) / "teacher_cache")
            fingerprint = {
                "teacher": cfg.teacher.model, "checkpoint": cfg.teacher.checkpoint, "overrides": cfg.teacher.overrides,
                "target": cfg.teacher.target, "weights": weights_digest(enc), "data": str(Path(cfg.data.train).resolve()),
                "num_images": len(self.train_hf), "views": cfg.cache.views, "input_size": cfg.data.input_size,
                "scale": list(cfg.data.scale), "ratio": list(cfg.data.ratio), "hflip": cfg.data.hflip, "seed": cfg.seed,
            }
            try:
                build_cache(
                    cache_dir, self.train_hf, self.teacher, fingerprint, views=cfg.cache.views,
                    size=cfg.data.input_size, seed=cfg.seed, batch_size=per_process_batch(cfg.train, acc.num_processes),
                    shard_rows=cfg.cache.shard_rows, accelerator=acc, **view_kw,
                )
            except CacheMismatchError as e:
                raise ConfigError(str(e)) from e
            self.train_set = CachedViews(cache_dir, self.train_hf, cfg.data.input_size, n_tok, cfg.seed)
        elif cfg.data.streaming:
            from datasets.distributed import split_dataset_by_node

            stream = split_dataset_by_node(self.train_hf, acc.process_index, acc.num_processes)
            self.train_set = StreamingImageViews(stream, cfg.data.input_size, n_tok, cfg.seed, **view_kw)
        else:
            self.train_set = ImageFolderViews(self.train_hf, cfg.data.input_size, n_tok, cfg.seed, **view_kw)

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        try:
            encoder = es.get_config(cfg.student.model, **cfg.student.overrides).image_encoder
        except (KeyError, TypeError) as e:
            raise ConfigError(f"student: {e}") from e
        student = ImageEncoderViT(encoder)
        model = SAMI(
            student, self.teacher.dim, self.grid, cfg.model.mask_ratio, cfg.model.decoder_dim,
            cfg.model.decoder_depth, cfg.model.decoder_heads, cfg.model.decoder_mlp_ratio, cfg.model.decoder_kv,
        )
        if cfg.student.init:
            src = es.from_pretrained(cfg.student.init)
            src = src if isinstance(src, ImageEncoderViT) else src.image_encoder
            load_strict(student, src.state_dict(), cfg.student.init)
        return model

    def train_dataset(self):
        return self.train_set

    def collate_fn(self):
        return collate

    def num_train_examples(self) -> int | None:
        return self.cfg.data.num_train_examples

    def target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        t = batch["target"].float() if "target" in batch else self.teacher(batch["image"])
        return normalize_target(t) if self.cfg.teacher.normalize_target else t

    def training_step(self, model, batch):
        target = self.target(batch)
        pred, _ = model(batch["image"], batch["noise"])
        return {"loss": sami_loss(pred, target)}, {"skipped_images": int(batch["skipped"])}

    @torch.no_grad()
    def evaluate(self, model: SAMI, acc: Accelerator) -> dict[str, float]:
        """MSE and cosine similarity of predicted vs teacher tokens on the held-out images (fixed
        centre views and masks): over all tokens and over the masked tokens only."""
        if self.val is None or len(self.val) == 0:
            return {}
        sums = torch.zeros(4, device=acc.device, dtype=torch.float64)  # sq err, cos all, cos masked, count
        mine = list(range(acc.process_index, len(self.val), acc.num_processes))
        bs = per_process_batch(self.cfg.train, acc.num_processes)
        for start in range(0, len(mine), bs):
            idx = mine[start : start + bs]
            images = torch.stack([self.val[i]["image"] for i in idx]).to(acc.device)
            noise = torch.stack([self.val[i]["noise"] for i in idx]).to(acc.device)
            missing = [k for k, i in enumerate(idx) if self._val_targets[i] is None]
            if missing:
                t = self.teacher(images[missing]).half().cpu()
                for k, tt in zip(missing, t):
                    self._val_targets[idx[k]] = tt
            target = torch.stack([self._val_targets[i] for i in idx]).to(acc.device).float()
            if self.cfg.teacher.normalize_target:
                target = normalize_target(target)
            with acc.autocast():
                pred, masking = model(images, noise)
            pred = pred.float()
            cos = F.cosine_similarity(pred, target, dim=-1)  # (B, N)
            mask = masking.mask
            sums += torch.stack([
                ((pred - target) ** 2).mean(-1).sum(),
                cos.sum(),
                ((cos * mask).sum(1) / mask.sum(1)).sum(),
                torch.tensor(float(len(idx)), device=acc.device),
            ]).double()
        sums = acc.reduce(sums, "sum")
        n_img = sums[3].item()
        n_tok = self.grid**2
        return {
            "mse": sums[0].item() / (n_img * n_tok),
            "cosine": sums[1].item() / (n_img * n_tok),
            "cosine_masked": sums[2].item() / n_img,
        }

    def save_final(self, model: SAMI, path: Path) -> None:
        """The student encoder in our format: loads into efficient_sam_vitt/vits via
        `es.build_model(name, encoder_checkpoint=path)` or `es.from_pretrained(path)`."""
        model.encoder.save_pretrained(path)


def main(argv: list[str] | None = None) -> None:
    engine_main(SamiConfig, SamiTask, __doc__, argv)


if __name__ == "__main__":
    main()
