"""SAMI pretraining speed: teacher, student step, and the step with and without the teacher cache.

    python -m benchmarks.sami_speed --student vitt vits --device cpu --dtype fp32 \\
        --json benchmarks/results/sami_cpu_fp32.json --markdown benchmarks/results/sami_cpu_fp32.md
    python -m benchmarks.sami_speed --student vitt --device cuda --dtype bf16 --peak-tflops 989

Random weights and random 224 px images throughout (speed does not depend on them). The student is
built as `SamiTask.build_model` does (EfficientSAM ViT-Ti/S encoder, paper decoder: dim 512, depth 8,
16 heads, mask ratio 0.75); the teacher (`sam_vit_h`) returns pre-neck tokens. Measured, each as the
median over `--repeats` batches after `--warmup` batches (synchronised wall clock on CUDA):

1. teacher: the `Teacher` forward (no grad; bf16 = autocast);
2. student step: forward + MSE loss + backward + AdamW step on random teacher targets;
3. no cache: teacher forward + student step, one loop, per batch;
4. with cache: read the batch's targets row by row from an fp16 safetensors shard
   (`get_slice("features")[i:i+1]`, as `CachedViews` does), move them to the device, `.float()`,
   then the student step;
5. FLOPs per image from `FlopCounterMode` on the meta device (FLOPs = 2 x MACs; matmuls,
   convolutions and attention only): teacher forward, student forward + backward;
   with `--peak-tflops`, the achieved percentage of that peak;
6. the paper's run (400 epochs of ImageNet-1k, 1,281,167 images) on one such device: hours
   without the cache, and with it (one teacher pass per cached view, then the cached epochs).

Data loading (JPEG decode, crops) is not timed in any of them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import efficient_sam as es
from efficient_sam.modeling.image_encoder import ImageEncoderViT
from pretrain_sami.model import SAMI, sami_loss
from pretrain_sami.teacher import Teacher, load_teacher_encoder

from .flops import count_flops
from .report import add_common_args, write_report
from .timing import machine_info, matmul_tflops, step_rates

STUDENTS = {"vitt": "efficient_sam_vitt", "vits": "efficient_sam_vits"}
IMAGENET_TRAIN = 1_281_167
EPOCHS = 400
SIZE = 224
DECODER = dict(mask_ratio=0.75, decoder_dim=512, decoder_depth=8, decoder_heads=16)


def build_student(name: str, teacher_dim: int) -> SAMI:
    """As `SamiTask.build_model`: the EfficientSAM encoder config, the paper's decoder."""
    encoder = ImageEncoderViT(es.get_config(name).image_encoder)
    return SAMI(encoder, teacher_dim, SIZE // encoder.cfg.patch_size, **DECODER)


def meta_flops(teacher_name: str, student_name: str) -> tuple[int, int]:
    """(teacher forward, student forward + backward) FLOPs for one 224 image, on the meta device."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = es.build_model(teacher_name).image_encoder.requires_grad_(False)
        x = torch.randn(1, 3, SIZE, SIZE)
        teacher = count_flops(lambda: enc.forward_tokens(x))[0]  # what Teacher runs for pre_neck (autocast has no meta)
        model = build_student(student_name, enc.cfg.embed_dim)
        target = torch.randn(1, model.num_tokens, enc.cfg.embed_dim)
        student = count_flops(lambda: sami_loss(model(x)[0], target).backward())[0]
    return teacher, student


def write_shard(path: Path, rows: int, n_tok: int, dim: int) -> None:
    save_file({"features": torch.randn(rows, n_tok, dim).half()}, str(path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.sami_speed", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--student", nargs="+", choices=sorted(STUDENTS), default=["vitt"])
    p.add_argument("--teacher", default="sam_vit_h", help="registry name of the teacher (random weights)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = torch.autocast on the device")
    p.add_argument("--batch-size", type=int, default=None, help="default: 8 on CPU, 256 on CUDA")
    p.add_argument("--warmup", type=int, default=None, help="default: 1 on CPU, 5 on CUDA")
    p.add_argument("--repeats", type=int, default=None, help="timed batches; default: 5 on CPU, 20 on CUDA")
    p.add_argument("--cache-rows", type=int, default=512, help="rows in the temporary shard (reads wrap around)")
    p.add_argument("--cache-views", type=int, default=1, help="fixed views per image in the cache projection")
    add_common_args(p)
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cpu = device.type == "cpu"
    bs = args.batch_size or (8 if cpu else 256)
    warmup = args.warmup if args.warmup is not None else (1 if cpu else 5)
    repeats = args.repeats if args.repeats is not None else (5 if cpu else 20)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    amp = torch.bfloat16 if args.dtype == "bf16" else None
    t_start = time.perf_counter()
    mm_dtype = amp or torch.float32
    mm_before = matmul_tflops(device, mm_dtype)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random weights" from load_teacher_encoder
        teacher = Teacher(load_teacher_encoder(args.teacher), "pre_neck", amp).to(device)
    images = torch.randn(bs, 3, SIZE, SIZE, device=device)
    log(f"teacher {args.teacher}: timing {warmup}+{repeats} batches of {bs}")
    t_teacher = step_rates(lambda: teacher(images), device, warmup, repeats, bs)
    log(f"teacher: {t_teacher['per_s']:.2f} img/s")
    n_tok, dim = (SIZE // teacher.encoder.cfg.patch_size) ** 2, teacher.dim
    row_bytes = n_tok * dim * 2

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "features.safetensors"
        cache_rows = max(1, min(args.cache_rows, bs * (warmup + repeats)))
        write_shard(shard, cache_rows, n_tok, dim)
        with safe_open(str(shard), "pt") as handle:
            for key in args.student:
                name = STUDENTS[key]
                model = build_student(name, dim).to(device).train()
                trainable = [q for q in model.parameters() if q.requires_grad]
                opt = torch.optim.AdamW(trainable, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
                fixed_target = torch.randn(bs, n_tok, dim, device=device)

                def student_step(target: torch.Tensor) -> None:
                    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                        pred, _ = model(images)
                    sami_loss(pred, target).backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)

                cursor = iter(range(10**9))

                def read_targets() -> torch.Tensor:
                    rows = [handle.get_slice("features")[i : i + 1][0]
                            for i in ((next(cursor) % cache_rows) for _ in range(bs))]
                    return torch.stack(rows).to(device).float()

                log(f"{key}: student step")
                t_student = step_rates(lambda: student_step(fixed_target), device, warmup, repeats, bs)
                log(f"{key}: no cache (teacher + student step)")
                t_nocache = step_rates(lambda: student_step(teacher(images)), device, warmup, repeats, bs)
                log(f"{key}: with cache (shard read + student step)")
                t_cache = step_rates(lambda: student_step(read_targets()), device, warmup, repeats, bs)
                f_teacher, f_student = meta_flops(args.teacher, name)
                total = EPOCHS * IMAGENET_TRAIN
                fill_h = args.cache_views * IMAGENET_TRAIN / t_teacher["per_s"] / 3600
                train_h = total / t_cache["per_s"] / 3600
                r = {
                    "student": key, "model": name, "trainable_params": sum(q.numel() for q in trainable),
                    "teacher": t_teacher, "student_step": t_student, "no_cache": t_nocache, "with_cache": t_cache,
                    "teacher_gflops_per_img": f_teacher / 1e9, "student_step_gflops_per_img": f_student / 1e9,
                    "cache_read_MBps_needed": t_cache["per_s"] * row_bytes / 1e6,
                    "paper_run_hours": {"no_cache": total / t_nocache["per_s"] / 3600,
                                        "with_cache": fill_h + train_h, "cache_fill": fill_h, "cached_epochs": train_h},
                }
                if args.peak_tflops:
                    peak = args.peak_tflops * 1e12
                    r["pct_peak"] = {"teacher": 100 * f_teacher * t_teacher["per_s"] / peak,
                                     "student_step": 100 * f_student * t_student["per_s"] / peak,
                                     "no_cache": 100 * (f_teacher + f_student) * t_nocache["per_s"] / peak}
                results.append(r)
                log(f"{key}: done")

    mm_after = matmul_tflops(device, mm_dtype)
    unit = "CPU" if cpu else "GPU"
    head = ["student", "teacher img/s", "student step img/s", "no cache samples/s", "with cache samples/s",
            "teacher GFLOPs/img", "student step GFLOPs/img"]
    head += ["teacher % of peak"] if args.peak_tflops else []
    head += [f"paper run {unit}-h, no cache", f"paper run {unit}-h, with cache (fill + epochs)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        h = r["paper_run_hours"]
        row = [r["model"], f"{r['teacher']['per_s']:.2f}", f"{r['student_step']['per_s']:.2f}",
               f"{r['no_cache']['per_s']:.2f}", f"{r['with_cache']['per_s']:.2f}",
               f"{r['teacher_gflops_per_img']:.1f}", f"{r['student_step_gflops_per_img']:.1f}"]
        row += [f"{r['pct_peak']['teacher']:.1f}"] if args.peak_tflops else []
        row += [f"{h['no_cache']:,.0f}", f"{h['with_cache']:,.0f} ({h['cache_fill']:,.0f} + {h['cached_epochs']:,.0f})"]
        lines.append("| " + " | ".join(row) + " |")
    machine = machine_info(device)
    notes = [
        f"{machine.get('gpu', machine['cpu'])}, torch {machine['torch']}, {machine['torch_threads']} threads; "
        f"{args.dtype}, batch {bs}, {SIZE} px, median of {repeats} batches after {warmup} warm-up; "
        f"teacher {args.teacher} (pre-neck, {n_tok}x{dim}), random weights",
        "GFLOPs: FlopCounterMode on the meta device, FLOPs = 2 x MACs, matmul/conv/attention only; "
        "student step = forward + backward of one image (AdamW not counted)",
        f"paper run = {EPOCHS} epochs x {IMAGENET_TRAIN:,} images on one such device; with cache = "
        f"{args.cache_views} teacher pass(es) per image to fill it + {EPOCHS} epochs at the cached rate "
        f"(cache: {args.cache_views * IMAGENET_TRAIN * row_bytes / 1e12:.2f} TB fp16; fixed views = less augmentation)",
        "with cache: rows read in the timed loop (no DataLoader workers) from a freshly written shard "
        f"({cache_rows} rows, in the page cache); the needed read rate is samples/s x {row_bytes / 2**10:.0f} KiB",
        "data loading / JPEG decoding / crops not timed",
        f"plain {args.dtype} 2048^2 matmul rate: {mm_before:.3f} TFLOP/s before, {mm_after:.3f} after the timings "
        "(a drop means the machine was slowed by something else)",
    ]
    report = {"machine": machine, "args": vars(args) | {"batch_size": bs, "warmup": warmup, "repeats": repeats},
              "wall_s": time.perf_counter() - t_start, "matmul_tflops": {"before": mm_before, "after": mm_after},
              "results": results}
    write_report("sami_speed", argv, lines, notes, report, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
