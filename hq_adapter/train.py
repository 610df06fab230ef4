"""HQ-SAM adapter training: `accelerate launch -m hq_adapter.train --config hq_adapter/configs/sam_vit_l.yaml [key.sub=value ...]`.

The base model (SAM or EfficientSAM) is frozen and never seen by the optimizer or the checkpoints:
the trained module registers only the 25 adapter tensors (HQ token, its MLP, the three fusion conv
stacks); the base runs under `no_grad` where nothing trainable depends on it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

import efficient_sam as es
from efficient_sam.checkpoint import CheckpointError
from efficient_sam.hq import base_view, build_hq_model, save_adapter
from efficient_sam.modeling.mask_decoder_hq import HQ_MODULES
from efficient_sam.training.config import ConfigError, RunConfig, TrainConfig, check, check_min
from efficient_sam.training.engine import Task
from efficient_sam.training.engine import main as engine_main

from .data import PROMPT_TYPES, HQDataConfig, HQSamples, SampleBuilder, collate, open_hq_records
from .losses import LossConfig, point_sampled_loss


@dataclass
class HQModelConfig:
    base: str = "sam_vit_l"  # registry name of the frozen base
    base_checkpoint: str | None = None  # any es.from_pretrained source; None = random weights (smoke only)
    overrides: dict[str, Any] = field(default_factory=dict)  # flat base overrides, e.g. {encoder_img_size: 256}
    early_block: int | None = None  # None: SAM's first global block; EfficientSAM block 2
    init: str | None = None  # an HQ checkpoint (official .pth, adapter folder) to continue from


def _paper_train() -> TrainConfig:
    """HQ-SAM: Adam lr 1e-3 (no weight decay), 12 epochs, x0.1 after epoch 10, batch 4 x 8 GPUs."""
    return TrainConfig(
        epochs=12, batch_size=4, global_batch_size=32, lr=1e-3, optimizer="adam", weight_decay=0.0,
        lr_schedule="step", lr_milestones=(10,), lr_gamma=0.1, warmup_steps=0, save_every=1000,
    )


@dataclass
class HQTrainConfig(RunConfig):
    output_dir: str = "runs/hq_adapter"
    model: HQModelConfig = field(default_factory=HQModelConfig)
    data: HQDataConfig = field(default_factory=HQDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=_paper_train)

    def validate(self) -> None:
        super().validate()
        d = self.data
        check_min(d, "data.", max_images=1, max_val_images=0, num_points=1)
        check(0 <= d.hflip <= 1, "data.hflip", d.hflip, "must be a probability in [0, 1]")
        check(0 < d.scale[0] <= d.scale[1], "data.scale", d.scale, "expected 0 < min <= max")


class HQAdapter(nn.Module):
    """The trainable part: the adapter modules of `sam.mask_decoder` (shared, not copied). The frozen
    HQ model is held outside the module tree, so `state_dict`, DDP and the optimizer see only the adapter.

    forward(batch) -> losses: the HQ-only low-res logits of every sample (one decoder call per prompt
    type present) against the soft label, with HQ-SAM's point-sampled BCE + dice.
    """

    def __init__(self, sam: es.Sam, loss: LossConfig) -> None:
        super().__init__()
        for name in HQ_MODULES:
            setattr(self, name, getattr(sam.mask_decoder, name))
        self.__dict__["sam"] = sam
        self.loss = loss

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sam = self.sam
        dec, pe = sam.mask_decoder, sam.prompt_encoder
        with torch.no_grad():  # the frozen encoder: nothing trainable before the fusion
            emb, early = sam.encode_image_early(batch["image"])
        hq_features = dec.hq_features(emb, early)
        b = emb.shape[0]
        logits = emb.new_zeros(b, 1, *hq_features.shape[-2:])
        image_pe = pe.get_dense_pe().to(emb.dtype)
        for kind, name in enumerate(PROMPT_TYPES):
            idx = (batch["prompt_type"] == kind).nonzero()[:, 0]
            if idx.numel() == 0:
                continue
            with torch.no_grad():
                if name == "box":
                    sparse, dense = pe(None, None, batch["box"][idx], None)
                elif name == "points":
                    pts = batch["points"][idx]
                    sparse, dense = pe(pts, torch.ones(pts.shape[:2], dtype=torch.long, device=pts.device), None, None)
                else:
                    sparse, dense = pe(None, None, None, batch["noise_mask"][idx])
            masks, _ = dec.predict_masks(
                emb[idx], image_pe, sparse.to(emb.dtype), None if dense is None else dense.to(emb.dtype), hq_features[idx]
            )
            logits = logits.index_copy(0, idx, masks[:, -1:].to(logits.dtype))  # the HQ token's mask
        g = torch.Generator(device=logits.device).manual_seed(int(batch["seed"].sum().item()) % (2**63 - 1))
        cfg = self.loss
        return point_sampled_loss(
            logits, batch["label"][:, None], cfg.num_points, cfg.oversample_ratio, cfg.importance_sample_ratio, g
        )


class HQTask(Task):
    cfg: HQTrainConfig

    def setup(self, acc: Accelerator) -> None:
        cfg, m = self.cfg, self.cfg.model
        if m.base_checkpoint is None and m.init is None:
            warnings.warn(f"model.base_checkpoint is empty: the base {m.base} has random weights (smoke runs only)",
                          stacklevel=1)
        try:
            self.sam = build_hq_model(m.base, checkpoint=m.init, base_checkpoint=m.base_checkpoint,
                                      early_block=m.early_block, **m.overrides)
        except (KeyError, TypeError, ValueError, OSError, CheckpointError) as e:
            raise ConfigError(f"model: {e}") from e
        self.sam.to(acc.device)
        self.base = base_view(self.sam)  # the frozen base with its vanilla decoder, for the eval/*_base rows
        pcfg = self.sam.config.prompt_encoder
        if pcfg.max_points is not None and "points" in cfg.data.prompts and cfg.data.num_points > pcfg.max_points:
            raise ConfigError(f"data.num_points={cfg.data.num_points}: this decoder takes at most {pcfg.max_points} points")
        try:
            builder = SampleBuilder(self.sam.config, cfg.data)
            with acc.main_process_first():
                records = open_hq_records(cfg.data.train, "train", cfg.data.max_images)
            self.train_set = HQSamples(records, builder, cfg.seed)
            val = cfg.data.val
            self.val = open_hq_records(val, "val", cfg.data.max_val_images) if val else []
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"data: {e}") from e

    def build_model(self) -> nn.Module:
        return HQAdapter(self.sam, self.cfg.loss)

    def train_dataset(self):
        return self.train_set

    def collate_fn(self):
        return collate

    def training_step(self, model, batch):
        return model(batch), {"skipped_images": int(batch["skipped"])}

    def no_weight_decay(self) -> tuple[str, ...]:
        return ("hf_token",)

    @torch.no_grad()
    def evaluate(self, model: HQAdapter, acc: Accelerator) -> dict[str, float]:
        """Box prompts on data.val with esam-eval's code: the HQ output alone (hq_token_only, HQ-SAM's
        validation) and the frozen base's own mask."""
        if not self.val:
            return {}
        from efficient_sam.evaluation import PredictorModel, evaluate_distributed

        seed = self.cfg.seed
        hq = evaluate_distributed(PredictorModel(self.sam, hq_token_only=True), self.val, "box", seed, acc)
        base = evaluate_distributed(PredictorModel(self.base), self.val, "box", seed, acc)
        return {"miou_hq": hq["miou"], "biou_hq": hq["mbiou"], "miou_base": base["miou"], "biou_base": base["mbiou"]}

    def save_final(self, model: HQAdapter, path: Path) -> None:
        """`path/`: the merged HQ model in our format (`es.from_pretrained`); `path/adapter/`: the adapter
        alone plus the reference to the base (`build_hq_model(base, checkpoint=path / "adapter")`)."""
        m = self.cfg.model
        self.sam.save_pretrained(path)
        save_adapter(self.sam, path / "adapter", {
            "base": m.base, "base_checkpoint": m.base_checkpoint, "overrides": m.overrides,
        })


def main(argv: list[str] | None = None) -> None:
    engine_main(HQTrainConfig, HQTask, __doc__, argv)


if __name__ == "__main__":
    main()
