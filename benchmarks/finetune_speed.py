"""EfficientSAM fine-tuning speed: one training step of SAM's interactive recipe (`finetune.model`).

    python -m benchmarks.finetune_speed --model vitt vits --device cpu --dtype fp32 --checkpoint-decoder \\
        --json benchmarks/results/finetune_cpu_fp32.json --markdown benchmarks/results/finetune_cpu_fp32.md
    python -m benchmarks.finetune_speed --model vitt vits --device cuda --dtype bf16 --peak-tflops 989 \\
        --warmup 3 --repeats 10 --json benchmarks/results/finetune_cuda_bf16.json
    python -m benchmarks.finetune_speed --model vitt --set encoder_img_size=256 --set encoder_depth=2 \\
        --masks 4 --warmup 0 --repeats 1                                         # a quick smoke test

Per `--model` (EfficientSAM ViT-Ti/S, random weights) and `--decoder` (EfficientSAM's or SAM's own
prompt encoder + mask decoder) the model is `InteractiveSam(build_finetune_model(...))`, as
`finetune.train` builds it. The batch: `--batch-size` real grabcut photos (`SampleBuilder`: the
family's preprocessing, targets on the loss grid, first prompts); each record has one object, so its
mask, point and box are repeated to `--masks` masks per image (SAM: up to 64), half with a box and
half with a point as the first prompt. Timed (median over `--repeats` steps after `--warmup`;
synchronised wall clock on CUDA): one training step = forward over all interactive rounds (image
encoder once per image, 1 + point rounds + no-point rounds decoder calls over all masks; bf16 =
torch.autocast around it, as accelerate does) + backward + AdamW (lr 4e-4, wd 0.1) step + zero_grad.
Not timed: data loading (JPEG decode, resizing, prompt sampling) and the host-to-device copy of the
batch, which is made once. Also reported: peak memory (CUDA allocator; on CPU the process's peak
RSS), FLOPs per step and image (FlopCounterMode on the meta device, matmul/conv/attention only,
forward + backward; AdamW and the losses not counted), the % of `--peak-tflops`, and the device-hours
of `--sa1b-epochs` epochs of SA-1B at the measured rate.

Memory: at 1024 px every round's decoder activations are kept for backward, about 1.2 GB per mask
with SAM's decoder in fp32 (11 rounds; ~75 GB at 64 masks); `--checkpoint-decoder` keeps one round's
(recomputed in backward: more time, and the FLOPs do not count it).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from efficient_sam.config import parse_override
from finetune.data import DataConfig, SampleBuilder, collate, open_records
from finetune.losses import LossConfig
from finetune.model import InteractiveSam, ModelConfig, build_finetune_model
from finetune.prompt_simulation import PromptConfig

from .flops import count_flops
from .report import add_common_args, write_report
from .timing import machine_info, matmul_tflops, step_rates

MODELS = {"vitt": "efficient_sam_vitt", "vits": "efficient_sam_vits"}
DECODERS = ("efficient_sam", "sam")
SA1B_IMAGES = 11_185_362
DATA = Path(__file__).resolve().parents[1] / "assets" / "grabcut"


def make_batch(model: InteractiveSam, records: list, batch_size: int, masks: int) -> dict[str, torch.Tensor]:
    """`batch_size` real samples, each record's masks/prompts tiled to `masks` entries; use_box alternates."""
    builder = SampleBuilder(model.sam.config, DataConfig(max_masks=masks), PromptConfig())
    samples = []
    for i in range(batch_size):
        s = builder(records[i % len(records)], np.random.default_rng(i))
        reps = -(-masks // s["masks"].shape[0])
        for k in ("masks", "points", "boxes"):
            s[k] = torch.cat([s[k]] * reps)[:masks]
        s["use_box"] = torch.arange(masks) % 2 == 0
        samples.append(s)
    return collate(samples)


def meta_flops(mcfg: ModelConfig, model: InteractiveSam) -> dict[str, float]:
    """Forward + backward FLOPs on the meta device: the encoder per image; the decoder per mask per
    round (mean of the first round, box + no mask input, and the last, all points + the mask input)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = InteractiveSam(build_finetune_model(mcfg), model.prompt, model.loss)
        s = m.sam.img_size
        enc = count_flops(lambda: m.sam.encode_image(torch.randn(1, 3, s, s)).sum().backward())[0]
        g = m.sam.config.image_encoder.grid_size
        emb = torch.randn(1, m.sam.config.mask_decoder.transformer_dim, g, g, requires_grad=True)

        def dec(n_points: int, mask_in: bool) -> int:
            coords, labels = torch.rand(1, n_points, 2) * s, torch.ones(1, n_points, dtype=torch.long)
            mask = torch.randn(1, 1, 4 * g, 4 * g) if mask_in else None
            return count_flops(lambda: sum(t.float().sum() for t in m._decode(emb, coords, labels, mask)).backward())[0]

        per_round = (dec(2, False) + dec(2 + m.point_rounds, m.mask_prompt)) / 2
    return {"encoder_gflops_per_img": enc / 1e9, "decoder_gflops_per_mask_round": per_round / 1e9}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.finetune_speed", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", nargs="+", choices=sorted(MODELS), default=["vitt"])
    p.add_argument("--decoder", nargs="+", choices=DECODERS, default=list(DECODERS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="es.build_model override, e.g. encoder_img_size=256 (repeatable)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = torch.autocast around forward")
    p.add_argument("--batch-size", type=int, default=1, help="images per step")
    p.add_argument("--masks", type=int, default=64, help="masks per image (SAM: up to 64)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed steps")
    p.add_argument("--checkpoint-decoder", action="store_true", help="PromptConfig.checkpoint_decoder")
    p.add_argument("--data", default=str(DATA), help="any efficient_sam.datasets layout (default: grabcut)")
    p.add_argument("--sa1b-epochs", type=float, default=5, help="epochs of SA-1B in the projection (paper: 5)")
    p.add_argument("--no-flops", action="store_true", help="skip the meta-device FLOP count")
    add_common_args(p)
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cpu = device.type == "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(parse_override(s) for s in args.set)
    amp = torch.bfloat16 if args.dtype == "bf16" else None
    t_start = time.perf_counter()
    mm_before = matmul_tflops(device, amp or torch.float32)
    records = open_records(args.data)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    results = []
    for key in args.model:
        for dec_name in args.decoder:
            torch.manual_seed(args.seed)
            mcfg = ModelConfig(name=MODELS[key], decoder=dec_name, overrides=overrides)
            model = InteractiveSam(build_finetune_model(mcfg), PromptConfig(checkpoint_decoder=args.checkpoint_decoder),
                                   LossConfig()).to(device).train()
            rounds = 1 + model.point_rounds + model.no_point_rounds
            batch = {k: v.to(device) for k, v in make_batch(model, records, args.batch_size, args.masks).items()}
            trainable = [q for q in model.parameters() if q.requires_grad]
            opt = torch.optim.AdamW(trainable, lr=4e-4, betas=(0.9, 0.999), weight_decay=0.1)

            def step() -> None:
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    loss = model(batch)["loss"]
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            log(f"{key}/{dec_name}: {model.sam.img_size} px, {rounds} rounds, {args.batch_size} x {args.masks} masks, "
                f"timing {args.warmup}+{args.repeats} steps")
            if not cpu:
                torch.cuda.reset_peak_memory_stats(device)
            t = step_rates(step, device, args.warmup, args.repeats, args.batch_size)
            peak_mb = (torch.cuda.max_memory_allocated(device) if not cpu
                       else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
            r = {"model": MODELS[key], "decoder": dec_name, "img_size": model.sam.img_size, "rounds": rounds,
                 "trainable_params": sum(q.numel() for q in trainable), "masks_per_img": args.masks,
                 "step": t, "images_per_s": t["per_s"], "masks_per_s": t["per_s"] * args.masks,
                 "peak_mem_mb": peak_mb, "peak_mem_kind": "process peak RSS" if cpu else "cuda max_memory_allocated",
                 "sa1b_device_hours": args.sa1b_epochs * SA1B_IMAGES / t["per_s"] / 3600}
            if not args.no_flops:
                f = meta_flops(mcfg, model)
                f["step_gflops_per_img"] = f["encoder_gflops_per_img"] + args.masks * rounds * f["decoder_gflops_per_mask_round"]
                f["achieved_tflops"] = f["step_gflops_per_img"] * t["per_s"] / 1e3
                if args.peak_tflops:
                    f["pct_peak"] = 100 * f["achieved_tflops"] / args.peak_tflops
                r |= f
            results.append(r)
            log(f"{key}/{dec_name}: {t['per_s']:.4f} img/s, {r['masks_per_s']:.2f} masks/s, {peak_mb:,.0f} MB")
            del model, opt, batch, trainable
            if not cpu:
                torch.cuda.empty_cache()

    mm_after = matmul_tflops(device, amp or torch.float32)
    unit = "CPU" if cpu else "GPU"
    flops = not args.no_flops
    head = ["model", "decoder", "rounds", "img/s", "masks/s", "step ms (min-max)", "peak MB"]
    head += ["GFLOPs/img (enc + dec)", "TFLOP/s"] if flops else []
    head += ["% of peak"] if flops and args.peak_tflops else []
    head += [f"SA-1B x{args.sa1b_epochs:g} {unit}-h"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        s = r["step"]
        row = [r["model"], r["decoder"], str(r["rounds"]), f"{r['images_per_s']:.4g}", f"{r['masks_per_s']:.4g}",
               f"{s['median_ms']:,.0f} ({s['min_ms']:,.0f}-{s['max_ms']:,.0f})", f"{r['peak_mem_mb']:,.0f}"]
        if flops:
            dec_total = r["step_gflops_per_img"] - r["encoder_gflops_per_img"]
            row += [f"{r['step_gflops_per_img']:,.0f} ({r['encoder_gflops_per_img']:,.0f} + {dec_total:,.0f})",
                    f"{r['achieved_tflops']:.3g}"]
            row += [f"{r['pct_peak']:.1f}"] if args.peak_tflops else []
        row += [f"{r['sa1b_device_hours']:,.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    machine = machine_info(device)
    size = results[0]["img_size"] if results else None
    notes = [
        f"{machine.get('gpu', machine['cpu'])}, torch {machine['torch']}, {machine['torch_threads']} threads; "
        f"{args.dtype}, {args.batch_size} image(s) x {args.masks} masks, {size} px"
        + (f" (overrides {overrides})" if overrides else "")
        + f", median of {args.repeats} steps after {args.warmup} warm-up; random weights"
        + ("; decoder rounds checkpointed" if args.checkpoint_decoder else ""),
        "step = forward over all rounds (encoder once per image, every round one decoder call over all masks) "
        "+ backward + AdamW (lr 4e-4, wd 0.1); rounds = 1 + point rounds + no-point rounds "
        "(the EfficientSAM prompt encoder's 6 point slots cap the point rounds at 4, and it has no mask prompt)",
        f"batch: real {Path(args.data).name} photos, each record's one mask and prompts repeated to {args.masks}, "
        "half box / half point first prompts; data loading and the host-to-device copy not timed",
        f"peak MB: {'process peak RSS (whole run so far)' if cpu else 'torch.cuda.max_memory_allocated over the timed steps'}",
    ]
    if flops:
        notes.append("GFLOPs: FlopCounterMode on the meta device, FLOPs = 2 x MACs, matmul/conv/attention only, "
                     "forward + backward; per image = encoder + masks x rounds x decoder per mask and round "
                     "(mean of first and last round); AdamW, losses and any recomputation not counted")
    notes += [
        f"SA-1B = {args.sa1b_epochs:g} epochs x {SA1B_IMAGES:,} images on one such device at the measured img/s "
        f"with {args.masks} masks per image (SA-1B averages ~100, SAM caps at 64)",
        f"plain {args.dtype} 2048^2 matmul rate: {mm_before:.3f} TFLOP/s before, {mm_after:.3f} after the timings "
        "(a drop means the machine was slowed by something else)",
    ]
    report = {"machine": machine, "args": vars(args) | {"overrides": overrides},
              "wall_s": time.perf_counter() - t_start, "matmul_tflops": {"before": mm_before, "after": mm_after},
              "results": results}
    write_report("finetune_speed", argv, lines, notes, report, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
