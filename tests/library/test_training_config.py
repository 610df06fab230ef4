"""The shared training engine's configs, optimizer groups and lr schedule."""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field

import pytest
import torch
import yaml
from torch import nn

from efficient_sam.training.config import ConfigError, RunConfig, TrainConfig, load_config, save_config
from efficient_sam.training.engine import TrainingError, batch_plan, list_checkpoints
from efficient_sam.training.optim import lr_at, param_groups, peak_lr, per_process_batch

from helpers import ROOT, launch


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


# ------------------------------------------------------------------------------------------------
# train.batch_size: auto


@pytest.mark.parametrize("processes, per_process", [(1, 16), (2, 8), (4, 4)])
def test_batch_size_auto_splits_the_global_batch(processes, per_process):
    tcfg = load_config(Cfg, None, ["train.batch_size=auto", "train.global_batch_size=16"]).train
    assert tcfg.batch_size == "auto"
    assert per_process_batch(tcfg, processes) == per_process
    plan = batch_plan(tcfg, processes)  # no gradient accumulation
    assert (plan.per_process, plan.processes, plan.accumulation, plan.global_batch) == (per_process, processes, 1, 16)


def test_explicit_batch_size_keeps_gradient_accumulation():
    tcfg = TrainConfig(batch_size=4, global_batch_size=16)
    assert per_process_batch(tcfg, 2) == 4
    plan = batch_plan(tcfg, 2)
    assert (plan.per_process, plan.accumulation, plan.global_batch) == (4, 2, 16)
    with pytest.raises(TrainingError, match=r"global_batch_size=16 is not a multiple of .* = 16 x 2"):
        batch_plan(TrainConfig(batch_size=16, global_batch_size=16), 2)


def test_batch_size_auto_errors_name_the_global_batch_and_processes():
    with pytest.raises(ConfigError, match=r"train.global_batch_size=16 is not divisible by the 3 processes"):
        per_process_batch(TrainConfig(batch_size="auto", global_batch_size=16), 3)
    with pytest.raises(ConfigError, match="train.batch_size=auto needs train.global_batch_size"):
        batch_plan(TrainConfig(batch_size="auto"), 1)


@pytest.mark.parametrize("value", ["big", "Auto", "true", "[8]", "null"])
def test_bad_batch_size_string_is_named(value):
    with pytest.raises(ConfigError, match=r"train.batch_size: .*expected an integer or 'auto'"):
        load_config(Cfg, None, [f"train.batch_size={value}"])


def test_batch_size_auto_survives_the_saved_config(tmp_path):
    (tmp_path / "c.yaml").write_text("train: {batch_size: auto, global_batch_size: 16}\n")
    cfg = load_config(Cfg, tmp_path / "c.yaml")
    save_config(cfg, tmp_path / "saved.yaml")
    assert "batch_size: auto" in (tmp_path / "saved.yaml").read_text()
    assert load_config(Cfg, tmp_path / "saved.yaml") == cfg


def test_smoke_configs_use_batch_size_auto():
    for trainer in ("pretrain_sami", "finetune", "hq_adapter"):
        text = (ROOT / trainer / "configs" / "smoke.yaml").read_text()
        assert re.search(r"^  batch_size: auto\b", text, re.M), trainer


@pytest.mark.distributed
def test_sami_smoke_config_runs_unchanged_on_two_processes(tmp_path, asset_paths, read_metrics):
    """`accelerate launch --num_processes 2` of pretrain_sami/configs/smoke.yaml (only the step count
    cut): global batch 16 = 8 per process, no accumulation; config.yaml keeps `auto`."""
    out = tmp_path / "run"
    res = launch("pretrain_sami.train", ["--config", str(ROOT / "pretrain_sami" / "configs" / "smoke.yaml"),
                                         f"output_dir={out}", f"data.train={asset_paths.grabcut / 'images'}",
                                         f"data.val={asset_paths.photos}",
                                         "train.max_steps=2"], 2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "global batch 16 = 8 x 2 process(es) x 1 accumulation (batch_size auto)" in res.stdout + res.stderr
    rows = read_metrics(out)
    assert [r["step"] for r in rows if "loss" in r] == [2] and math.isfinite(rows[-1]["eval/mse"])
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["batch_size"] == "auto"
    assert (out / "final" / "model.safetensors").is_file() and [p.name for p in list_checkpoints(out)] == ["step_2"]


# ------------------------------------------------------------------------------------------------
# Bad input: every bad value is a ConfigError naming its key (issue 13); the CLI says it in one line.


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-3", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("train.lr=.inf", "train.lr"),
        ("train.blr=0", "train.blr"),
        ("train.blr=null", "train.lr"),  # neither lr nor blr
        ("train.grad_clip=-1", "train.grad_clip"),  # a negative max norm flips the gradient
        ("train.grad_clip=0", "train.grad_clip"),
        ("train.warmup_steps=-1", "train.warmup_steps"),
        ("train.warmup_epochs=-0.5", "train.warmup_epochs"),
        ("train.lr_schedule=cosin", "train.lr_schedule"),  # was noticed only after warm-up
        ("train.max_steps=0", "train.max_steps"),  # wrote a final/ that was never trained
        ("train.max_steps=-3", "train.max_steps"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.batch_size=-2", "train.batch_size"),
        ("train.global_batch_size=0", "train.global_batch_size"),
        ("train.save_every=0", "train.save_every"),  # modulo by zero in the loop
        ("train.log_every=0", "train.log_every"),
        ("train.eval_every=-5", "train.eval_every"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints"),
        ("train.num_workers=-1", "train.num_workers"),
        ("train.stop_after=0", "train.stop_after"),
        ("train.optimizer=sgd", "train.optimizer"),
        ("train.betas=[0.9, 1.0]", "train.betas"),
        ("train.eps=-1e-8", "train.eps"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("train.min_lr=-1e-6", "train.min_lr"),
        ("train.lr_gamma=0", "train.lr_gamma"),
        ("train.lr_milestones=[-1]", "train.lr_milestones"),
        ("train.layer_decay=0", "train.layer_decay"),
        ("train.mixed_precision=fp8", "train.mixed_precision"),
        ("seed=-1", "seed"),
        ("output_dir=''", "output_dir"),
    ],
)
def test_bad_value_is_a_config_error_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"\b{re.escape(key)}\b") as e:
        load_config(Cfg, None, [override])
    assert "\n" not in str(e.value)


def test_valid_edge_values_are_still_accepted():
    """Values that were accepted and mean something stay accepted."""
    cfg = load_config(Cfg, None, [
        "train.warmup_steps=0", "train.num_workers=0", "train.eval_every=0", "train.grad_clip=null", "train.lr=1e30",
        "train.mixed_precision=no", "train.weight_decay=0", "train.min_lr=0", "train.max_steps=1", "train.stop_after=1",
        "train.batch_size=1", "train.keep_checkpoints=1", "train.betas=[0, 0.999]", "seed=0",
    ])
    assert cfg.train.eval_every == 0 and cfg.train.mixed_precision == "false" and cfg.train.lr == 1e30
    assert load_config(Cfg, None, ["train.epochs=0", "train.max_steps=5"]).train.max_steps == 5  # epochs unused


def test_output_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=rf"output_dir={re.escape(str(tmp_path / 'f'))} is an existing file"):
        load_config(Cfg, None, [f"output_dir={tmp_path / 'f'}"])
    with pytest.raises(ConfigError, match=rf"output_dir=.*/f/run: {re.escape(str(tmp_path / 'f'))} is an existing file"):
        load_config(Cfg, None, [f"output_dir={tmp_path / 'f' / 'run'}"])
    assert load_config(Cfg, None, [f"output_dir={tmp_path / 'new' / 'run'}"]).output_dir  # a folder to make is fine


def test_yaml_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "c.yaml").write_text("seed: 1\ntrain: {lr: [1,\n")
    with pytest.raises(ConfigError, match=r"c.yaml, line 3, column 1: not valid YAML"):
        load_config(Cfg, tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"config file not found: .*missing.yaml"):
        load_config(Cfg, tmp_path / "d.yaml")
    (tmp_path / "e.yaml").write_text("train: {lr: 0}\n")
    with pytest.raises(ConfigError, match=r"train.lr=0.0: must be > 0"):
        load_config(Cfg, tmp_path / "e.yaml")


def test_a_config_built_in_code_is_checked_by_train(tmp_path):
    from efficient_sam.training.engine import Task, train

    cfg = Cfg(output_dir=str(tmp_path / "run"), train=TrainConfig(lr=1e-3, max_steps=0))
    with pytest.raises(ConfigError, match="train.max_steps=0"):
        train(cfg, Task(cfg))
    assert not (tmp_path / "run").exists()  # refused before anything is written


SHIPPED = sorted(ROOT.glob("*/configs/*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parts[-3]}/{p.name}" for p in SHIPPED])
def test_every_shipped_config_loads(path):
    from finetune.train import FinetuneConfig
    from hq_adapter.train import HQTrainConfig
    from pretrain_sami.train import SamiConfig

    cls = {"pretrain_sami": SamiConfig, "finetune": FinetuneConfig, "hq_adapter": HQTrainConfig}[path.parts[-3]]
    cfg = load_config(cls, path)
    cfg.validate()
    assert cfg.train.lr is not None or cfg.train.blr is not None


def test_shipped_configs_are_all_tested():
    assert len(SHIPPED) >= 9 and {p.parts[-3] for p in SHIPPED} == {"pretrain_sami", "finetune", "hq_adapter"}


def _bad_data(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "unreadable").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "unreadable" / name).write_bytes(b"not a jpeg")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "broken.yaml").write_text("train: {lr: [1,\n")
    (tmp_path / "base_missing.yaml").write_text("base: nope.yaml\n")


ONE_BATCH = ["train.batch_size=1", "train.global_batch_size=1", "data.val=null"]
BAD_RUNS = {  # id: (args, what the one line must say)
    "yaml-syntax": (["--config", "{t}/broken.yaml"], r"broken.yaml, line 2, column 1: not valid YAML"),
    "missing-config": (["--config", "{t}/nope.yaml"], r"config file not found: .*nope.yaml"),
    "missing-base": (["--config", "{t}/base_missing.yaml"], r"config file not found: .*nope.yaml"),
    "output-dir-file": (["output_dir={t}/afile"], r"output_dir=.*afile is an existing file"),
    "batch-size-0": (["train.batch_size=0"], r"train.batch_size=0: must be >= 1"),
    "log-every-0": (["train.log_every=0"], r"train.log_every=0: must be >= 1"),
    "save-every-0": (["train.save_every=0"], r"train.save_every=0: must be >= 1"),
    "schedule": (["train.lr_schedule=cosin"], r"train.lr_schedule='cosin': expected cosine"),
    "max-steps-0": (["train.max_steps=0"], r"train.max_steps=0: must be >= 1"),
    "unknown-key": (["train.lrr=1"], r"unknown config key\(s\) train.lrr"),
    "empty-data": (["data.train={t}/empty"], r"data.train: no images .* under .*empty"),
    "missing-data": (["data.train={t}/nowhere"], r"data.train: image folder not found: .*nowhere"),
    "data-is-a-file": (["data.train={t}/afile"], r"data.train: image folder not found: .*afile"),
    "empty-val": (["data.val={t}/empty"], r"data.val: no images .* under .*empty"),
    "unreadable-data": (["data.train={t}/unreadable", *ONE_BATCH],
                        r"2 unreadable images in a row from index 0: is data.train an image folder"),
    "unreadable-data-worker": (["data.train={t}/unreadable", *ONE_BATCH, "train.num_workers=1"],
                               r"^error: 2 unreadable images in a row from index 0: is data.train"),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_cli_run_ends_with_one_error_line(case, tmp_path, fresh_accelerate_state):
    """`python -m pretrain_sami.train ...` (its `main`, in this process): a user error exits with
    `error: ...` on one line (SystemExit with a message = exit code 1, printed to stderr), never a
    traceback; the line names the key or file."""
    from pretrain_sami.train import main

    _bad_data(tmp_path)
    args, message = BAD_RUNS[case]
    args = [a.format(t=tmp_path) for a in args]
    if "--config" not in args:
        args = ["--config", str(ROOT / "pretrain_sami" / "configs" / "smoke.yaml"), f"output_dir={tmp_path / 'run'}",
                f"data.train={ROOT / 'assets' / 'grabcut' / 'images'}", "data.val=null", *args]
    with pytest.warns() if "unreadable" in case else contextlib.nullcontext():
        with pytest.raises(SystemExit) as e:
            main(args)
    text = e.value.code
    assert isinstance(text, str) and text.startswith("error: ") and "\n" not in text, text
    assert "Traceback" not in text and re.search(message, text), text


@pytest.mark.parametrize("case", ["yaml-syntax", "unreadable-data-worker"])
def test_bad_cli_run_in_a_process_prints_no_traceback(case, tmp_path):
    """The same through `python -m pretrain_sami.train`: exit code 1, the last stderr line is the
    `error:` line, no traceback anywhere."""
    import os
    import subprocess
    import sys

    _bad_data(tmp_path)
    args, message = BAD_RUNS[case]
    args = [a.format(t=tmp_path) for a in args]
    if "--config" not in args:
        args = ["--config", str(ROOT / "pretrain_sami" / "configs" / "smoke.yaml"), f"output_dir={tmp_path / 'run'}", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "pretrain_sami.train", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(message, last), last


def test_unusable_records_count_once_per_epoch():
    """`data/skipped_images` counts files: 2 bad records in a row are 2 per epoch, not 3 (sample i
    counts its own record only, not the ones it tried after it)."""
    from efficient_sam.training.data import RecordSamples, SkipRecord

    from types import SimpleNamespace as Rec

    def build(rec, rng):
        if rec.path.startswith("bad"):
            raise SkipRecord("broken")
        return {"name": rec.path}

    ds = RecordSamples([Rec(path=n) for n in ("ok0", "bad1", "bad2", "ok3", "ok4")], build, seed=0)
    with pytest.warns(UserWarning) as warned:
        items = [ds[i] for i in range(len(ds))]
    assert [it["skipped"] for it in items] == [0, 1, 1, 0, 0] and [it["name"] for it in items][1:3] == ["ok3", "ok3"]
    assert sorted(str(w.message) for w in warned) == ["skipping bad1: broken", "skipping bad2: broken"]  # once per file
    with pytest.warns(UserWarning), pytest.raises(TrainingError, match="2 unusable records in a row from index 0"):
        RecordSamples([Rec(path="bad1"), Rec(path="bad2")], build, seed=0)[0]
    with pytest.raises(ConfigError, match="data.train: no images"):
        RecordSamples([], build, seed=0)
