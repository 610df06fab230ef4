"""The shared training engine's configs, optimizer groups and lr schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from efficient_sam.training.config import ConfigError, RunConfig, TrainConfig, load_config, save_config
from efficient_sam.training.optim import lr_at, param_groups, peak_lr


@dataclass
class Section:
    name: str = "a"
    sizes: tuple[int, int] = (1, 2)
    extra: dict = field(default_factory=dict)
    ratio: float | None = None


@dataclass
class Cfg(RunConfig):
    section: Section = field(default_factory=Section)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=400, blr=1.5e-4))


def test_yaml_overrides_and_trainer_defaults(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\nsection: {name: b}\ntrain: {batch_size: 8}\n")
    (tmp_path / "c.yaml").write_text("base: base.yaml\ntrain: {lr: 1e-3}\n")
    cfg = load_config(Cfg, tmp_path / "c.yaml", ["section.sizes=[3, 4]", "train.max_steps=5", "section.extra.k=1",
                                                   "output_dir=/tmp/x", "section.ratio=2.5e-1", "resume=auto"])
    assert cfg.seed == 3 and cfg.section.name == "b" and cfg.section.sizes == (3, 4)
    assert cfg.train.batch_size == 8 and cfg.train.lr == 1e-3 and cfg.train.max_steps == 5
    assert cfg.train.epochs == 400 and cfg.train.blr == 1.5e-4  # the trainer's defaults survive a partial section
    assert cfg.section.extra == {"k": 1} and cfg.section.ratio == 0.25 and cfg.resume == "auto"
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(Cfg, tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", r"unknown config key\(s\) train.lrr"),
        ("nope=1", "unknown config key"),
        ("train.batch_size=abc", "train.batch_size: expected an integer"),
        ("train.batch_size=2.5", "expected an integer"),
        ("section.sizes=[1, 2, 3]", "expected 2 values"),
        ("seed=null", "null is not allowed"),
        ("train=3", "expected a section"),
        ("train.max_steps", "expected key.sub=value"),
    ],
)
def test_bad_config_is_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Cfg, None, [override])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, "nope.yaml")


def test_lr_schedule():
    cfg = TrainConfig(lr_schedule="cosine", min_lr=1e-5)
    lrs = [lr_at(s, 100, 10, 1e-3, cfg, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warm-up
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[55] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, 100, 10, 1e-3, cfg, 10) == pytest.approx(1e-5)
    step = TrainConfig(lr_schedule="step", lr_milestones=(10,), lr_gamma=0.1)
    assert lr_at(99, 120, 0, 1e-3, step, 10) == pytest.approx(1e-3)
    assert lr_at(100, 120, 0, 1e-3, step, 10) == pytest.approx(1e-4)
    linear = TrainConfig(lr_schedule="linear")
    assert lr_at(50, 100, 0, 4e-4, linear, 10) == pytest.approx(2e-4)
    assert peak_lr(TrainConfig(blr=1.5e-4), 4096) == pytest.approx(2.4e-3)
    assert peak_lr(TrainConfig(lr=1e-3, blr=1.5e-4), 4096) == 1e-3


def test_no_weight_decay_on_norms_biases_and_embeddings():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
            self.lin = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)
            self.frozen = nn.Linear(8, 8).requires_grad_(False)

    groups = param_groups(M(), 0.05, no_weight_decay=("pos_embed",))
    by = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert by == {"pos_embed": 0.0, "lin.weight": 0.05, "lin.bias": 0.0, "norm.weight": 0.0, "norm.bias": 0.0}
