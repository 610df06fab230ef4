"""`esam-bench`: parameters, GMACs, latency, throughput and peak memory of SAM / EfficientSAM models.

    esam-bench --models sam_vit_b efficient_sam_vitt --reference --device cpu --dtype fp32 \\
               --batch-size 1 --json bench.json --markdown bench.md --plot bench.png

Per model it times, separately (warm-up, then `--repeats` runs; median/min/max; CUDA events and
synchronisation on GPU):
- `encoder`: the image encoder on a (B, 3, S, S) batch;
- `decoder_1`: prompt encoder + mask decoder for one box prompt on a precomputed embedding
  (low-res logits, all mask tokens);
- `decoder_N`: the same for a batch of N box prompts (`--prompts`, default 64) on one image;
- `e2e`: a real photo end to end: each family's preprocessing, encoder, one box prompt per image,
  mask selection and upsampling to the original size, threshold.
GMACs come from `FlopCounterMode` on the meta device (GMACs = FLOPs / 2), cross-checked with fvcore
(SDPA handle registered). `--reference` times the official `segment_anything` model with the same
weights in the same process (SAM models only; EfficientSAM has no official package installed).

`esam-bench --amg ...` times the automatic mask generator instead (`benchmarks/amg_bench.py`), and
`esam-bench --onnx ...` onnxruntime against torch on the exported models (`benchmarks/onnx_bench.py`).

`--hq` adds, right after each model's row, its HQ-SAM variant `<model>+hq` (`efficient_sam.hq.build_hq_model`:
the base plus the HQ token, its MLP and the fusion convs), timed the same way on the HQ path:
`encoder` = `encode_image_hq` (encoder + the once-per-image global-local fusion), the decoders take
the HQ features and return SAM + HQ logits (one mask per prompt), and a table "HQ over base" gives the
added parameters, GMACs and latency per backbone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import efficient_sam as es
from efficient_sam.config import parse_override
from efficient_sam.precision import DTYPES

from . import flops as F_
from .official import ReferenceUnavailable, build_official, check_reference
from .report import PHASES, hq_overhead, markdown, plot, ratios  # noqa: F401 - PHASES: `bench.PHASES`
from .runners import HQRunner, OfficialRunner, OursRunner
from .timing import PeakMemory, machine_info, memory_kind, release_memory, rss_bytes, time_fn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT / "assets" / "photos" / "truck.jpg"
DEFAULT_BOX = (425, 600, 700, 875)  # the SAM example's box on truck.jpg
HQ_SUFFIX = "+hq"


# ----------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------


def load_photo(path: str | None) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    p = Path(path) if path else DEFAULT_IMAGE
    if p.exists():
        img = np.array(Image.open(p).convert("RGB"))
        box = DEFAULT_BOX if (path is None and img.shape[:2] == (1200, 1800)) else None
    else:  # no photo: a smooth synthetic 1200x1800 image
        if path:
            raise FileNotFoundError(f"--image {p} does not exist")
        yy, xx = np.mgrid[0:1200, 0:1800]
        img = np.stack([(xx * 255 // 1800), (yy * 255 // 1200), ((xx + yy) % 256)], -1).astype(np.uint8)
        box = None
    if box is None:
        h, w = img.shape[:2]
        box = (0.25 * w, 0.3 * h, 0.6 * w, 0.75 * h)
    return img, tuple(float(v) for v in box)


def count_model_flops(name: str, overrides: dict, num_prompts: int, official: bool, hq: bool = False) -> dict[str, Any]:
    """GMACs on the meta device; `hq`: of the HQ model on its HQ path (encoder = `encode_image_hq`,
    decoder with HQ features)."""
    meta = (F_.meta_hq_model if hq else F_.meta_model)(name, **overrides)
    out: dict[str, Any] = {}
    enc_fn, dec_fn = (F_.hq_encoder_flops, F_.hq_decoder_flops) if hq else (F_.encoder_flops, F_.decoder_flops)
    enc, enc_ops = enc_fn(meta)
    dec1, _ = dec_fn(meta, 1)
    decn, _ = dec_fn(meta, num_prompts)
    out.update(
        gmacs_encoder=enc / 2e9, gmacs_decoder_per_prompt=dec1 / 2e9, gmacs_decoder_n=decn / 2e9,
        encoder_flops_by_op={k: v / 2e9 for k, v in enc_ops.items()},
    )
    if official:
        with torch.device("meta"):
            ref = build_official(meta.config)
        ref.requires_grad_(False)
        x = F_.encoder_inputs(meta)
        out["gmacs_encoder_official_counted"] = F_.count_flops(ref.image_encoder, x)[0] / 2e9
    return out


def run_one(
    name: str, impl: str, args, overrides: dict, image: np.ndarray, box, progress=None, hq: bool = False
) -> dict[str, Any]:
    """One row: model `name` with `impl` "ours" or "official"; `hq`: its HQ-SAM variant (ours only),
    reported as `<name>+hq`."""
    if hq and impl != "ours":
        raise ValueError("HQ rows are timed with our implementation only")
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    label = name + HQ_SUFFIX if hq else name
    res: dict[str, Any] = {
        "model": label, "impl": impl, "device": str(device), "dtype": args.dtype, "batch_size": args.batch_size,
        "image_size": args.image_size, "compile": args.compile, "prompts": args.prompts,
        "overrides": {k: v for k, v in overrides.items() if k != "encoder_img_size"},
    }
    if hq:
        res.update(hq=True, base_model=name)

    def phase(s: str) -> None:
        if progress is not None:
            progress.set_postfix_str(f"{label} [{impl}] {s}", refresh=True)

    release_memory(device)
    baseline = 0 if device.type == "cuda" else rss_bytes()
    torch.manual_seed(args.seed)
    phase("build")
    if hq:
        from efficient_sam.hq import build_hq_model

        ours = build_hq_model(name, **overrides)
    else:
        ours = es.build_model(name, **overrides)
    res["family"] = ours.config.family
    params = F_.param_counts(ours)
    res["params"] = params["total"]
    res["params_by_part"] = params
    if hq:
        res["hq_early_block"] = ours.config.hq.early_block
        res["params_base"] = F_.param_counts(F_.meta_model(name, **overrides))["total"]
        res["params_added"] = res["params"] - res["params_base"]
    phase("count FLOPs")
    res.update(count_model_flops(name, overrides, args.prompts, official=(impl == "official"), hq=hq))
    if impl == "ours" and args.fvcore:
        phase("fvcore cross-check")
        ours.to(device)  # fvcore traces a real fp32 forward pass: on the benchmark device
        x = F_.encoder_inputs(ours, 1)
        if hq:
            enc_mod, dec_mod, dec_in = F_.HQEncoderCall(ours), F_.HQDecoderCall(ours), F_.hq_decoder_inputs(ours, 1)
        else:
            enc_mod, dec_mod, dec_in = ours.image_encoder, F_.DecoderCall(ours), F_.decoder_inputs(ours, 1)
        try:
            enc_v, _, _ = F_.fvcore_macs(enc_mod, (x,))
            dec_v, _, _ = F_.fvcore_macs(dec_mod, dec_in)
            enc_v0 = None
            if args.fvcore_no_handle:
                enc_v0 = F_.fvcore_macs(enc_mod, (x,), sdpa_handle=False)[0]
        except Exception as e:  # noqa: BLE001
            res["fvcore_error"] = repr(e)
        else:
            res["fvcore_gmacs_encoder"] = enc_v / 1e9
            res["fvcore_gmacs_decoder_per_prompt"] = dec_v / 1e9
            res["fvcore_rel_diff_encoder"] = enc_v / 1e9 / res["gmacs_encoder"] - 1
            res["fvcore_rel_diff_decoder"] = dec_v / 1e9 / res["gmacs_decoder_per_prompt"] - 1
            if enc_v0 is not None:
                res["fvcore_gmacs_encoder_without_sdpa_handle"] = enc_v0 / 1e9
        del x, enc_mod, dec_mod, dec_in
    compile_ = (args.compile_mode or True) if args.compile else False
    if impl == "official":
        runner = OfficialRunner(ours, device, dtype, compile_)
    else:
        runner = (HQRunner if hq else OursRunner)(ours, device, dtype, compile_)
    if impl == "official":
        del ours
        res["params"] = sum(p.numel() for p in runner.model.parameters())
    s = runner.cfg.image_encoder.img_size
    x = torch.randn(args.batch_size, 3, s, s, device=device).to(dtype)
    emb1 = torch.randn(1, runner.cfg.mask_decoder.transformer_dim, s // 16, s // 16, device=device).to(dtype)
    extra1 = runner.decoder_extra_inputs(emb1)  # HQ: the HQ features of that image
    _, boxes1 = F_.decoder_inputs(runner.cfg, 1, device)
    _, boxesn = F_.decoder_inputs(runner.cfg, args.prompts, device)
    images = [image] * args.batch_size
    box_t = torch.tensor(box, dtype=torch.float32)
    lat: dict[str, Any] = {}
    w, r = args.warmup, args.repeats
    phase("encoder")
    lat["encoder"] = time_fn(lambda: runner.encode(x), device, w, r)
    phase("decoder x1")
    lat["decoder_1"] = time_fn(lambda: runner.decode(emb1, boxes1, *extra1), device, w, r)
    phase(f"decoder x{args.prompts}")
    lat["decoder_n"] = time_fn(lambda: runner.decode(emb1, boxesn, *extra1), device, w, r)
    phase("end to end")
    with PeakMemory(device, baseline) as mem:
        lat["e2e"] = time_fn(lambda: runner.end_to_end(images, box_t), device, w, r)
    res["latency_ms"] = lat
    res["throughput_img_s"] = args.batch_size * 1e3 / lat["e2e"]["median"]
    res["encoder_throughput_img_s"] = args.batch_size * 1e3 / lat["encoder"]["median"]
    res["peak_mem_mb"] = mem.mb
    if args.compile:
        res["compile_first_call_ms"] = {k: v["first_warmup_ms"] for k, v in lat.items()}
    del runner, x, emb1, extra1
    release_memory(device)
    return res


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="esam-bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", nargs="+", default=["sam_vit_b", "efficient_sam_vitt"],
                   help=f"registered model names ({', '.join(es.list_models())})")
    p.add_argument("--hq", action="store_true",
                   help="also time each model's HQ-SAM variant (hq_adapter.build_hq_model), as `<model>+hq`")
    p.add_argument("--reference", action="store_true",
                   help="also time the official segment_anything model with the same weights (SAM models)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--batch-size", type=int, default=1, help="images per encoder / end-to-end call")
    p.add_argument("--image-size", type=int, default=1024, help="encoder input resolution (default 1024)")
    p.add_argument("--prompts", type=int, default=64, help="box prompts in the batched decoder timing")
    p.add_argument("--compile", action="store_true", help="torch.compile encoder and decoder (excluded from timings)")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode, e.g. max-autotune or reduce-overhead (default: torch's default)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per timing (default: 1 on CPU, 5 on CUDA)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls (default: 3 on CPU, 20 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                   metavar="KEY=VALUE", help="config override for every model, e.g. --set encoder_depth=2")
    p.add_argument("--image", default=None, help=f"photo for the end-to-end timing (default {DEFAULT_IMAGE.name})")
    p.add_argument("--no-fvcore", dest="fvcore", action="store_false",
                   help="skip the fvcore cross-check (it runs one real forward pass)")
    p.add_argument("--fvcore-no-handle", action="store_true",
                   help="also report fvcore without the SDPA handle (shows the attention it misses)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the full results here")
    p.add_argument("--markdown", default=None, help="write the markdown tables here")
    p.add_argument("--plot", default=None, help="write a latency-vs-parameters PNG here")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--amg" in argv:  # the mask generator benchmark has its own options
        from . import amg_bench

        argv.remove("--amg")
        return amg_bench.main(argv)
    if "--onnx" in argv:  # onnxruntime vs torch, its own options too
        from . import onnx_bench

        argv.remove("--onnx")
        return onnx_bench.main(argv)
    args = build_parser().parse_args(argv)
    from tqdm.auto import tqdm

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("esam-bench: --device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = device.type == "cpu"
    args.warmup = args.warmup if args.warmup is not None else (1 if cpu else 5) + (2 if args.compile else 0)
    args.repeats = args.repeats if args.repeats is not None else (3 if cpu else 20)
    if args.compile and args.warmup < 1:
        raise SystemExit("esam-bench: --compile needs --warmup >= 1 (compilation happens in the warm-up)")
    if args.batch_size < 1 or args.prompts < 1 or args.repeats < 1:
        raise SystemExit("esam-bench: --batch-size, --prompts and --repeats must be >= 1")
    unknown = [m for m in args.models if m not in es.list_models()]
    if unknown:
        raise SystemExit(f"esam-bench: unknown model(s) {unknown}; available: {', '.join(es.list_models())}")
    overrides = dict(args.overrides)
    if args.image_size != 1024:
        overrides["encoder_img_size"] = args.image_size
    image, box = load_photo(args.image)

    notes = [f"peak memory: {memory_kind(device)}",
             "decoder = prompt encoder + mask decoder on a precomputed embedding, low-res logits of all mask tokens; "
             "end to end = preprocessing + encoder + 1 box per image + mask selection + upsampling to the photo's "
             f"{image.shape[1]}x{image.shape[0]} size + threshold",
             "weights are random (seeded): timings and counts do not depend on them"]
    runs: list[tuple[str, str, bool]] = []  # (model, impl, hq)
    for name in args.models:
        runs.append((name, "ours", False))
        if args.hq:
            runs.append((name, "ours", True))
        if args.reference:
            try:
                check_reference(es.get_config(name, **overrides))
                runs.append((name, "official", False))
            except ReferenceUnavailable as e:
                notes.append(f"{name}: no reference timing: {e}")
    if args.hq:
        notes.append(
            f"`<model>{HQ_SUFFIX}`: hq_adapter.build_hq_model(<model>) (random adapter weights), our implementation; "
            "encoder = encode_image_hq (encoder + the HQ fusion of the early-block feature and the embedding, once per "
            "image); decoders = prompt encoder + HQ mask decoder with the HQ features, SAM + HQ logits "
            "(hq_token_only=False), one mask per prompt; GMACs of the same calls"
        )
        if args.reference:
            notes.append("--reference covers the base models only (no official HQ-SAM timing)")
    if args.reference and any(i == "official" for _, i, _ in runs) and args.dtype != "fp32":
        notes.append("official model in low precision: its prompt encoder runs in fp32 (the official code fails "
                     "otherwise) and its outputs are cast")
    if args.reference and args.batch_size > 1:
        notes.append("official end to end decodes image by image (its mask decoder takes one embedding per call)")

    results = []
    failed = False
    bar = tqdm(runs, desc="esam-bench", unit="run", disable=args.no_progress, file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for name, impl, hq in bar:
            try:
                results.append(run_one(name, impl, args, overrides, image, box, progress=bar, hq=hq))
            except Exception as e:  # noqa: BLE001 - keep the other runs, report the failure
                failed = True
                label = name + HQ_SUFFIX if hq else name
                results.append({"model": label, "impl": impl, "error": f"{type(e).__name__}: {e}"})
                print(f"esam-bench: {label} [{impl}] failed: {type(e).__name__}: {e}", file=sys.stderr)
    bar.close()

    report = {
        "command": "esam-bench " + " ".join(shlex.quote(a) for a in argv),
        "machine": machine_info(device),
        "args": {k: v for k, v in vars(args).items() if k != "overrides"} | {"overrides": overrides},
        "results": results,
        "ratios": ratios(results),
        "hq_overhead": hq_overhead(results),
        "notes": notes,
    }
    md = markdown(report)
    print(md)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(f"`{report['command']}`\n\n" + md)
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(report, args.plot)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
