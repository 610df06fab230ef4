"""The training engine shared by `pretrain_sami`, `finetune` and `hq_adapter`.

A trainer subclasses `Task` (its model, data, loss, evaluation, final export) and calls
`train(cfg, task)`. The engine owns everything else: the accelerate loop with gradient accumulation
to `train.global_batch_size`, mixed precision, clipping, the per-step lr schedule, checkpoints
(atomic, rotated, `resume=auto`), `metrics.jsonl` + TensorBoard, the progress bar, evaluation rows
and the NaN-loss stop.

Run folder (`output_dir`): `config.yaml`, `metrics.jsonl`, `checkpoints/step_<n>/`, `final/`,
`tensorboard/`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, send_to_device, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from .config import RunConfig, save_config, to_dict
from .optim import build_optimizer, lr_at, param_groups, peak_lr, set_lr

CHECKPOINT_PREFIX = "step_"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad configuration); the message says what to do."""


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


@dataclass
class TrainState:
    """Loop position, saved as JSON next to accelerate's state in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this process consumed in `epoch`
    samples: int = 0  # samples seen, all processes
    counts: dict[str, int] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: Path) -> "TrainState":
        return cls(**json.loads(path.read_text()))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written `.tmp` folders are ignored)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def resolve_resume(cfg: RunConfig) -> Path | None:
    if cfg.resume in (None, "", "none"):
        return None
    if cfg.resume == "auto":
        ckpts = list_checkpoints(cfg.output_dir)
        return ckpts[-1] if ckpts else None
    path = Path(cfg.resume)
    if not (path / "train_state.json").is_file():
        raise TrainingError(f"resume={cfg.resume!r} is not a checkpoint folder (no train_state.json)")
    return path


def _mixed_precision(value: str) -> str:
    value = "no" if value == "false" else value  # a bare YAML `no` arrives as false (config._coerce)
    if value == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    if value not in ("no", "bf16", "fp16"):
        raise TrainingError(f"train.mixed_precision must be auto, no, bf16 or fp16, not {value!r}")
    return value


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            return False
    return True


def _flat_scalars(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config -> flat {a/b: scalar} (TensorBoard's hparams accept only scalars and strings)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat_scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float, str, bool)):
            out[prefix + k] = v
        else:
            out[prefix + k] = str(v)
    return out


class MetricsWriter:
    """`metrics.jsonl` (main process, append, flushed per row) plus the accelerate trackers."""

    def __init__(self, accelerator: Accelerator, path: Path) -> None:
        self.acc = accelerator
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop rows of an interrupted run that lie after the checkpoint we resume from."""
        if not (self.acc.is_main_process and self.path.is_file()):
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        keep = [line for line in rows if json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def log(self, row: dict[str, Any]) -> None:
        if self.acc.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        self.acc.log(scalars, step=row["step"])


def train(cfg: RunConfig, task: Task) -> Path:
    """Run (or resume) training; returns the run folder."""
    tcfg = cfg.train
    out = Path(cfg.output_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = tcfg.batch_size * world
    gbs = tcfg.global_batch_size or per_step
    if gbs % per_step:
        raise TrainingError(
            f"train.global_batch_size={gbs} is not a multiple of train.batch_size x processes = "
            f"{tcfg.batch_size} x {world}; change one of them"
        )
    accum = gbs // per_step
    trackers = ["tensorboard"] if _tensorboard_available() else []
    if not trackers:
        warnings.warn("tensorboard is not installed: metrics go to metrics.jsonl only", stacklevel=2)
    acc = Accelerator(
        gradient_accumulation_steps=accum,
        mixed_precision=_mixed_precision(tcfg.mixed_precision),
        log_with=trackers,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "tensorboard")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        step_scheduler_with_optimizer=False,
    )
    if acc.num_processes != world:
        raise TrainingError(
            f"accelerate sees {acc.num_processes} process(es) but WORLD_SIZE={world}: the launch is misconfigured "
            "(on CPU use `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`)"
        )
    set_seed(cfg.seed)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    acc.wait_for_everyone()

    task.setup(acc)
    model = task.build_model()
    dataset = task.train_dataset()
    iterable = isinstance(dataset, IterableDataset)
    dl = DataLoader(
        dataset,
        batch_size=tcfg.batch_size,
        shuffle=not iterable,
        drop_last=True,
        num_workers=tcfg.num_workers,
        collate_fn=task.collate_fn(),
        pin_memory=acc.device.type == "cuda",
    )
    groups = param_groups(
        model, tcfg.weight_decay, task.no_weight_decay(), task.layer_id, task.num_layers(), tcfg.layer_decay
    )
    optimizer = build_optimizer(groups, tcfg)
    trainable = [p for g in groups for p in g["params"]]
    if iterable:  # already split by process; accelerate must not shard it again
        model, optimizer = acc.prepare(model, optimizer)
        n = task.num_train_examples()
        if n is None and tcfg.max_steps is None:
            raise TrainingError("a streaming dataset needs train.max_steps (its length is unknown)")
        batches_per_epoch = (n // world // tcfg.batch_size) if n is not None else None
    else:
        model, optimizer, dl = acc.prepare(model, optimizer, dl)
        batches_per_epoch = len(dl)
    if batches_per_epoch == 0:
        raise TrainingError(f"the training set is smaller than one batch ({tcfg.batch_size} x {world} processes)")
    steps_per_epoch = math.ceil(batches_per_epoch / accum) if batches_per_epoch else 0
    total = tcfg.max_steps if tcfg.max_steps is not None else math.ceil(tcfg.epochs * steps_per_epoch)
    warmup = tcfg.warmup_steps if tcfg.warmup_steps is not None else round(tcfg.warmup_epochs * steps_per_epoch)
    base_lr = peak_lr(tcfg, gbs)

    metrics = MetricsWriter(acc, out / "metrics.jsonl")
    state = TrainState()
    ckpt = resolve_resume(cfg)
    if ckpt is not None:
        acc.load_state(str(ckpt))
        state = TrainState.load(ckpt / "train_state.json")
        metrics.truncate_after(state.step)
        acc.print(f"resumed from {ckpt} (step {state.step}, epoch {state.epoch})")
    elif list_checkpoints(out):
        raise TrainingError(
            f"{out} holds checkpoints of an earlier run ({list_checkpoints(out)[-1].name}); continue it with "
            "resume=auto, or choose another output_dir (a fresh run would mix its checkpoints with the old ones)"
        )
    elif acc.is_main_process and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # a fresh run in a used folder starts a fresh log
    acc.init_trackers("tensorboard", config=_flat_scalars(to_dict(cfg)))
    acc.print(
        f"{total} optimizer steps ({steps_per_epoch} per epoch), global batch {gbs} = {tcfg.batch_size} x "
        f"{world} process(es) x {accum} accumulation, peak lr {base_lr:.3g}, warm-up {warmup} steps, "
        f"precision {acc.mixed_precision}"
    )

    def save_checkpoint() -> None:
        final = out / "checkpoints" / f"{CHECKPOINT_PREFIX}{state.step}"
        tmp = final.with_name(final.name + ".tmp")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if acc.is_main_process:
            state.save(tmp / "train_state.json")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)  # the rename commits the checkpoint
            for old in list_checkpoints(out)[: -tcfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def epoch_progress() -> float:
        return state.epoch + (state.batch_in_epoch / batches_per_epoch if batches_per_epoch else 0.0)

    def run_eval() -> None:
        model.eval()
        results = task.evaluate(acc.unwrap_model(model), acc)
        model.train()
        if results:
            row = {"step": state.step, "epoch": epoch_progress(), **{f"eval/{k}": v for k, v in results.items()}}
            metrics.log(row)
            acc.print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))

    sums: dict[str, torch.Tensor] = {}
    n_micro = 0
    nonfinite = torch.zeros(1, device=acc.device)
    local_counts: dict[str, int] = {}
    t_log, samples_log = time.perf_counter(), state.samples
    stop_at = total if tcfg.stop_after is None else min(total, state.step + tcfg.stop_after)
    bar = tqdm(total=total, initial=state.step, disable=not acc.is_local_main_process, desc="train", dynamic_ncols=True)
    model.train()
    done_eval_at = -1
    if tcfg.eval_at_start and state.step == 0:
        run_eval()
        done_eval_at = 0
    while state.step < stop_at:
        if hasattr(dl, "set_epoch"):
            dl.set_epoch(state.epoch)
        elif hasattr(dataset, "set_epoch"):
            dataset.set_epoch(state.epoch)
        loader = acc.skip_first_batches(dl, state.batch_in_epoch) if state.batch_in_epoch else dl
        for batch in loader:
            if iterable:
                batch = send_to_device(batch, acc.device)
            set_lr(optimizer, lr_at(state.step, total, warmup, base_lr, tcfg, steps_per_epoch))
            with acc.accumulate(model):
                losses, counts = task.training_step(model, batch)
                loss = losses["loss"]
                nonfinite += (~torch.isfinite(loss.detach())).float()
                acc.backward(loss)
                grad_norm = None
                if acc.sync_gradients:
                    if acc.reduce(nonfinite, "sum").item() > 0:
                        bar.close()
                        last = list_checkpoints(out)
                        raise TrainingError(
                            f"loss is {loss.item()} at step {state.step + 1} (epoch {state.epoch}); training "
                            f"stopped before the update. Last checkpoint: {last[-1] if last else 'none'}. "
                            "Lower train.lr or set train.grad_clip, then run again with resume=auto."
                        )
                    if tcfg.grad_clip is not None:
                        grad_norm = acc.clip_grad_norm_(trainable, tcfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batch_in_epoch += 1
            n_micro += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
            for k, v in counts.items():
                local_counts[k] = local_counts.get(k, 0) + v
            state.samples += tcfg.batch_size * world
            if not acc.sync_gradients:
                continue
            if local_counts:  # one collective per optimizer step, not per micro-batch
                keys = sorted(local_counts)
                summed = acc.reduce(torch.tensor([local_counts[k] for k in keys], device=acc.device), "sum")
                for k, v in zip(keys, summed.tolist()):
                    state.counts[k] = state.counts.get(k, 0) + int(v)
                local_counts = {}
            state.step += 1
            bar.update(1)
            if state.step % tcfg.log_every == 0 or state.step == stop_at:
                means = {k: acc.reduce(v / n_micro, "mean").item() for k, v in sums.items()}
                now = time.perf_counter()
                row = {
                    "step": state.step,
                    "epoch": epoch_progress(),
                    **means,
                    "lr": optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_scale", 1.0),
                    "samples_per_s": (state.samples - samples_log) / max(now - t_log, 1e-9),
                    **{f"data/{k}": v for k, v in state.counts.items()},
                }
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                metrics.log(row)
                bar.set_postfix(loss=f"{means['loss']:.4g}", lr=f"{row['lr']:.3g}")
                sums, n_micro, t_log, samples_log = {}, 0, now, state.samples
            if tcfg.eval_every and state.step % tcfg.eval_every == 0:
                run_eval()
                done_eval_at = state.step
            if state.step % tcfg.save_every == 0 and state.step < stop_at:
                save_checkpoint()
            if state.step >= stop_at:
                break
        else:  # the epoch ran out
            state.epoch += 1
            state.batch_in_epoch = 0
            if tcfg.eval_every is None and state.step < stop_at:
                run_eval()
                done_eval_at = state.step
    bar.close()
    if not (out / "checkpoints" / f"{CHECKPOINT_PREFIX}{state.step}").is_dir():
        save_checkpoint()
    if state.step >= total:
        if done_eval_at != state.step:
            run_eval()
        final = out / "final"
        if acc.is_main_process:
            tmp = out / "final.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            task.save_final(acc.unwrap_model(model), tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        acc.print(f"done: {state.step} steps; model in {final}")
    else:
        acc.print(f"stopped after step {state.step} of {total} (train.stop_after); continue with resume=auto")
    acc.wait_for_everyone()
    acc.end_training()
    return out


def main(config_cls: type, task_cls: type, description: str, argv: list[str] | None = None) -> None:
    """A trainer's command line: `--config FILE key.sub=value ...`; config and training errors end
    the process with their message (no traceback)."""
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
    except (ConfigError, TrainingError) as e:
        sys.exit(f"error: {e}")

