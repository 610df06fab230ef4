"""The training engine shared by `pretrain_sami`, `finetune` and `hq_adapter`.

A trainer subclasses `Task` (its model, data, loss, evaluation, final export) and calls
`train(cfg, task)`. The engine owns everything else: the accelerate loop with gradient accumulation
to `train.global_batch_size` (none with `train.batch_size: auto`), mixed precision, clipping, the
per-step lr schedule, checkpoints (atomic, rotated, `resume=auto`), `metrics.jsonl` + TensorBoard,
the progress bar, evaluation rows and the NaN-loss stop.

Run folder (`output_dir`): `config.yaml`, `metrics.jsonl`, `checkpoints/step_<n>/`, `final/`,
`tensorboard/`.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, send_to_device, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from .checkpoints import TrainState, checkpoint_dir, export_final, list_checkpoints, resolve_resume, save_checkpoint
from .config import RunConfig, TrainConfig, TrainingError, save_config, to_dict
from .metrics import LogInterval, MetricsWriter, flat_scalars, tensorboard_available
from .optim import build_optimizer, lr_at, param_groups, peak_lr, per_process_batch, set_lr


class Task:
    """What a trainer adds to the engine. Override the methods marked required."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def setup(self, accelerator: Accelerator) -> None:
        """Called once the accelerator exists (place frozen modules on its device, build caches)."""

    def build_model(self) -> nn.Module:  # required
        """The trainable module (goes through `accelerator.prepare`; DDP-wrapped on several processes)."""
        raise NotImplementedError

    def train_dataset(self) -> Dataset:  # required
        """Map-style dataset (sharded and shuffled by the engine), or an `IterableDataset` already split
        by process. A `set_epoch(epoch)` method, if present, is called before every epoch."""
        raise NotImplementedError

    def collate_fn(self) -> Callable | None:
        return None

    def num_train_examples(self) -> int | None:
        """Examples per epoch of an `IterableDataset` (all processes together)."""
        return None

    def training_step(self, model: nn.Module, batch: Any) -> tuple[dict[str, torch.Tensor], dict[str, int]]:  # required
        """-> (losses, counts). `losses["loss"]` is back-propagated; every entry is logged as its mean
        over the logging interval. `counts` are summed over the whole run (e.g. skipped images)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, accelerator: Accelerator) -> dict[str, float]:
        """Held-out metrics (without the `eval/` prefix); run on every process, reduce inside."""
        return {}

    def save_final(self, model: nn.Module, path: Path) -> None:  # required
        """Write the trained model to `path` (our `save_pretrained` format)."""
        raise NotImplementedError

    def no_weight_decay(self) -> tuple[str, ...]:
        """Name fragments of parameters without weight decay (norms and biases are always exempt)."""
        return ("pos_embed", "cls_token", "mask_token")

    def layer_id(self, name: str) -> int:
        """Depth of parameter `name` for layer-wise lr decay (0 = embeddings, num_layers = head)."""
        return self.num_layers()

    def num_layers(self) -> int:
        return 0


def _mixed_precision(value: str) -> str:
    value = "no" if value == "false" else value  # a bare YAML `no` arrives as false (config._coerce)
    if value == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    if value not in ("no", "bf16", "fp16"):
        raise TrainingError(f"train.mixed_precision must be auto, no, bf16 or fp16, not {value!r}")
    return value


@dataclass
class BatchPlan:
    """How the global batch is made: per-process micro-batch x processes x accumulation steps."""

    per_process: int
    processes: int
    accumulation: int
    auto: bool = False  # per_process came from `train.batch_size: auto`

    @property
    def global_batch(self) -> int:
        return self.per_process * self.processes * self.accumulation


def batch_plan(tcfg: TrainConfig, world: int) -> BatchPlan:
    """`train.batch_size` (or `auto`) and `train.global_batch_size` on `world` processes."""
    per = per_process_batch(tcfg, world)
    per_step = per * world
    gbs = tcfg.global_batch_size or per_step
    if gbs % per_step:
        raise TrainingError(
            f"train.global_batch_size={gbs} is not a multiple of train.batch_size x processes = "
            f"{per} x {world}; change one of them"
        )
    return BatchPlan(per, world, gbs // per_step, auto=tcfg.batch_size == "auto")


def make_accelerator(cfg: RunConfig, plan: BatchPlan) -> Accelerator:
    """The accelerator of a run (checked against `WORLD_SIZE`); TensorBoard when it is installed."""
    out = Path(cfg.output_dir)
    trackers = ["tensorboard"] if tensorboard_available() else []
    if not trackers:
        warnings.warn("tensorboard is not installed: metrics go to metrics.jsonl only", stacklevel=3)
    acc = Accelerator(
        gradient_accumulation_steps=plan.accumulation,
        mixed_precision=_mixed_precision(cfg.train.mixed_precision),
        log_with=trackers,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "tensorboard")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        step_scheduler_with_optimizer=False,
    )
    if acc.num_processes != plan.processes:
        raise TrainingError(
            f"accelerate sees {acc.num_processes} process(es) but WORLD_SIZE={plan.processes}: the launch is "
            "misconfigured (on CPU use `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`)"
        )
    return acc


def write_run_config(acc: Accelerator, cfg: RunConfig) -> None:
    """`output_dir/config.yaml`: the config as loaded (`batch_size: auto` stays `auto`, so the file
    runs again on any number of processes; the resolved batch is in the start-up line)."""
    if acc.is_main_process:
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        save_config(cfg, Path(cfg.output_dir) / "config.yaml")
    acc.wait_for_everyone()


def start_position(cfg: RunConfig, acc: Accelerator, metrics: MetricsWriter) -> TrainState:
    """Where the loop starts: the resumed checkpoint's position (its model/optimizer state loaded, later
    metrics rows dropped), or step 0 in a folder without checkpoints (an old metrics.jsonl removed)."""
    out = Path(cfg.output_dir)
    ckpt = resolve_resume(cfg)
    if ckpt is not None:
        acc.load_state(str(ckpt))
        state = TrainState.load(ckpt / "train_state.json")
        metrics.truncate_after(state.step)
        acc.print(f"resumed from {ckpt} (step {state.step}, epoch {state.epoch})")
        return state
    if list_checkpoints(out):
        raise TrainingError(
            f"{out} holds checkpoints of an earlier run ({list_checkpoints(out)[-1].name}); continue it with "
            "resume=auto, or choose another output_dir (a fresh run would mix its checkpoints with the old ones)"
        )
    if acc.is_main_process and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # a fresh run in a used folder starts a fresh log
    return TrainState()


class Run:
    """The prepared pieces of one run (model, optimizer, loader, schedule) and its steps: a
    micro-batch, the end of an optimizer step, logging, evaluation and checkpoints."""

    def __init__(self, cfg: RunConfig, task: Task, acc: Accelerator, plan: BatchPlan) -> None:
        self.cfg, self.tcfg, self.task, self.acc, self.plan = cfg, cfg.train, task, acc, plan
        self.out = Path(cfg.output_dir)
        tcfg, world = cfg.train, plan.processes
        self.model = task.build_model()
        self.dataset = task.train_dataset()
        self.iterable = isinstance(self.dataset, IterableDataset)
        dl = DataLoader(
            self.dataset,
            batch_size=plan.per_process,
            shuffle=not self.iterable,
            drop_last=True,
            num_workers=tcfg.num_workers,
            collate_fn=task.collate_fn(),
            pin_memory=acc.device.type == "cuda",
        )
        groups = param_groups(
            self.model, tcfg.weight_decay, task.no_weight_decay(), task.layer_id, task.num_layers(), tcfg.layer_decay
        )
        optimizer = build_optimizer(groups, tcfg)
        self.trainable = [p for g in groups for p in g["params"]]
        if self.iterable:  # already split by process; accelerate must not shard it again
            self.model, self.optimizer = acc.prepare(self.model, optimizer)
            self.dl = dl
            n = task.num_train_examples()
            if n is None and tcfg.max_steps is None:
                raise TrainingError("a streaming dataset needs train.max_steps (its length is unknown)")
            self.batches_per_epoch = (n // world // plan.per_process) if n is not None else None
        else:
            self.model, self.optimizer, self.dl = acc.prepare(self.model, optimizer, dl)
            self.batches_per_epoch = len(self.dl)
        if self.batches_per_epoch == 0:
            raise TrainingError(f"the training set is smaller than one batch ({plan.per_process} x {world} processes)")
        bpe = self.batches_per_epoch
        self.steps_per_epoch = math.ceil(bpe / plan.accumulation) if bpe else 0
        self.total = tcfg.max_steps if tcfg.max_steps is not None else math.ceil(tcfg.epochs * self.steps_per_epoch)
        self.warmup = (
            tcfg.warmup_steps if tcfg.warmup_steps is not None else round(tcfg.warmup_epochs * self.steps_per_epoch)
        )
        self.base_lr = peak_lr(tcfg, plan.global_batch)
        self.metrics = MetricsWriter(acc, self.out / "metrics.jsonl")
        self.nonfinite = torch.zeros(1, device=acc.device)
        self.local_counts: dict[str, int] = {}
        self.evaluated_at = -1

    def summary(self) -> str:
        p = self.plan
        return (
            f"{self.total} optimizer steps ({self.steps_per_epoch} per epoch), global batch {p.global_batch} = "
            f"{p.per_process} x {p.processes} process(es) x {p.accumulation} accumulation"
            f"{' (batch_size auto)' if p.auto else ''}, peak lr {self.base_lr:.3g}, warm-up {self.warmup} steps, "
            f"precision {self.acc.mixed_precision}"
        )

    def epoch_progress(self, state: TrainState) -> float:
        bpe = self.batches_per_epoch
        return state.epoch + (state.batch_in_epoch / bpe if bpe else 0.0)

    def epoch_batches(self, state: TrainState):
        """The loader of `state.epoch`, reseeded, with the batches consumed before a resume skipped."""
        if hasattr(self.dl, "set_epoch"):
            self.dl.set_epoch(state.epoch)
        elif hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(state.epoch)
        return self.acc.skip_first_batches(self.dl, state.batch_in_epoch) if state.batch_in_epoch else self.dl

    def micro_step(self, batch: Any, state: TrainState, interval: LogInterval) -> Any:
        """Forward/backward of one micro-batch (the update on the last of an accumulation); returns
        the clipped gradient norm (None without clipping or between updates). A non-finite loss on
        any process since the last update stops the run before the update."""
        acc, tcfg = self.acc, self.tcfg
        if self.iterable:
            batch = send_to_device(batch, acc.device)
        set_lr(self.optimizer, lr_at(state.step, self.total, self.warmup, self.base_lr, tcfg, self.steps_per_epoch))
        with acc.accumulate(self.model):
            losses, counts = self.task.training_step(self.model, batch)
            loss = losses["loss"]
            self.nonfinite += (~torch.isfinite(loss.detach())).float()
            acc.backward(loss)
            grad_norm = None
            if acc.sync_gradients:
                if acc.reduce(self.nonfinite, "sum").item() > 0:
                    last = list_checkpoints(self.out)
                    raise TrainingError(
                        f"loss is {loss.item()} at step {state.step + 1} (epoch {state.epoch}); training "
                        f"stopped before the update. Last checkpoint: {last[-1] if last else 'none'}. "
                        "Lower train.lr or set train.grad_clip, then run again with resume=auto."
                    )
                if tcfg.grad_clip is not None:
                    grad_norm = acc.clip_grad_norm_(self.trainable, tcfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        state.batch_in_epoch += 1
        interval.add(losses)
        for k, v in counts.items():
            self.local_counts[k] = self.local_counts.get(k, 0) + v
        state.samples += self.plan.per_process * self.plan.processes
        return grad_norm

    def end_step(self, state: TrainState) -> None:
        """After an update: run-wide counters summed over processes (one collective), step + 1."""
        if self.local_counts:
            keys = sorted(self.local_counts)
            summed = self.acc.reduce(torch.tensor([self.local_counts[k] for k in keys], device=self.acc.device), "sum")
            for k, v in zip(keys, summed.tolist()):
                state.counts[k] = state.counts.get(k, 0) + int(v)
            self.local_counts = {}
        state.step += 1

    def log(self, state: TrainState, interval: LogInterval, grad_norm: Any) -> dict[str, Any]:
        group = self.optimizer.param_groups[0]
        lr = group["lr"] / group.get("lr_scale", 1.0)
        row = interval.row(self.acc, state, self.epoch_progress(state), lr, grad_norm)
        self.metrics.log(row)
        return row

    def evaluate(self, state: TrainState) -> None:
        """`task.evaluate` on the unwrapped model; a metrics row of `eval/...` keys."""
        self.model.eval()
        results = self.task.evaluate(self.acc.unwrap_model(self.model), self.acc)
        self.model.train()
        self.evaluated_at = state.step
        if results:
            row = {"step": state.step, "epoch": self.epoch_progress(state)}
            row.update({f"eval/{k}": v for k, v in results.items()})
            self.metrics.log(row)
            self.acc.print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))

    def save(self, state: TrainState) -> None:
        save_checkpoint(self.acc, self.out, state, self.tcfg.keep_checkpoints)


def train(cfg: RunConfig, task: Task) -> Path:
    """Run (or resume) training; returns the run folder. The config's values are checked first
    (`validate()`, as `load_config` does), so a config built in code gets the same errors."""
    if hasattr(cfg, "validate"):
        cfg.validate()
    tcfg, out = cfg.train, Path(cfg.output_dir)
    plan = batch_plan(tcfg, int(os.environ.get("WORLD_SIZE", "1")))
    acc = make_accelerator(cfg, plan)
    set_seed(cfg.seed)
    write_run_config(acc, cfg)
    task.setup(acc)
    run = Run(cfg, task, acc, plan)
    state = start_position(cfg, acc, run.metrics)
    acc.init_trackers("tensorboard", config=flat_scalars(to_dict(cfg)))
    acc.print(run.summary())

    interval = LogInterval(state.samples)
    stop_at = run.total if tcfg.stop_after is None else min(run.total, state.step + tcfg.stop_after)
    quiet = not acc.is_local_main_process
    with tqdm(total=run.total, initial=state.step, disable=quiet, desc="train", dynamic_ncols=True) as bar:
        run.model.train()
        if tcfg.eval_at_start and state.step == 0:
            run.evaluate(state)
        while state.step < stop_at:
            for batch in run.epoch_batches(state):
                grad_norm = run.micro_step(batch, state, interval)
                if not acc.sync_gradients:
                    continue
                run.end_step(state)
                bar.update(1)
                if state.step % tcfg.log_every == 0 or state.step == stop_at:
                    row = run.log(state, interval, grad_norm)
                    bar.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.3g}")
                if tcfg.eval_every and state.step % tcfg.eval_every == 0:
                    run.evaluate(state)
                if state.step % tcfg.save_every == 0 and state.step < stop_at:
                    run.save(state)
                if state.step >= stop_at:
                    break
            else:  # the epoch ran out
                state.epoch += 1
                state.batch_in_epoch = 0
                if tcfg.eval_every is None and state.step < stop_at:
                    run.evaluate(state)
    if not checkpoint_dir(out, state.step).is_dir():
        run.save(state)
    if state.step >= run.total:
        if run.evaluated_at != state.step:
            run.evaluate(state)
        acc.print(f"done: {state.step} steps; model in {export_final(acc, task, run.model, out)}")
    else:
        acc.print(f"stopped after step {state.step} of {run.total} (train.stop_after); continue with resume=auto")
    acc.wait_for_everyone()
    acc.end_training()
    return out


def error_line(e: BaseException) -> str:
    """`error: <message>` on one line. An error re-raised by a DataLoader worker carries the worker's
    traceback in its message ("Caught X in DataLoader worker process 0. Original Traceback ..."):
    only its last line (the original message) is kept."""
    text = str(e)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+: ", "", last.strip())  # "pkg.module.TrainingError: message" -> message
    return "error: " + " ".join(text.split())


def main(config_cls: type, task_cls: type, description: str, argv: list[str] | None = None) -> None:
    """A trainer's command line: `--config FILE key.sub=value ...`. Every user error (a bad config
    file, key or value, a missing data path, training that cannot go on) ends the process with exit
    code 1 and one line `error: ...` on stderr, never a traceback; other exceptions are bugs and
    keep theirs."""
    import argparse
    import sys

    from .config import ConfigError, load_config

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML config (<package>/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value, e.g. train.max_steps=100 data.train=DIR")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(config_cls, args.config, args.overrides)
        train(cfg, task_cls(cfg))
    except (ConfigError, TrainingError, FileNotFoundError, NotADirectoryError) as e:
        sys.exit(error_line(e))

