"""`esam-bench --onnx`: onnxruntime (CPU) on our ONNX export against our torch model (CPU), same weights,
same inputs, in the same run.

    esam-bench --onnx --models sam_vit_b efficient_sam_vitt --prompts 64 --threads 8 \\
               --dtype fp16 --quantize int8 --json onnx.json --markdown onnx.md

Each model gets `randomize_` weights (seeded) and is exported with `efficient_sam.onnx.export.export_model`
into a temporary folder (or `--export-dir/<model>-<variant>`): the fp32 export always, an fp16 export with
`--dtype fp16`, an int8 (dynamically quantized encoder) export with `--quantize int8`. Phases, each timed
with `benchmarks.timing.time_fn` (median / min / max ms over `--repeats` after `--warmup` calls):

- encoder: a (1, 3, S, S) input; torch `model.image_encoder`, onnx encoder.onnx;
- decoder x1 / decoder xN: 1 and `--prompts` box prompts on one image embedding in one call; torch
  `model.decode(emb, boxes=...)` (as `benchmarks.runners.OursRunner`: low-res logits + IoU), onnx
  decoder.onnx with the prompt batch, restricted to its `iou_predictions` / `low_res_masks` outputs (the
  same work as torch; onnxruntime drops the unused upscaling nodes at load);
- decoder xN +masks: the same plus the masks upscaled to S x S: decoder.onnx as shipped
  (orig_im_size = (S, S)) against `model.decode` + `transforms.postprocess_masks`.

onnx / torch is the ratio of the medians (< 1: onnxruntime is faster). Deviations are max |a - b| / max |b|
against the fp32 torch model: of the image embeddings (encoder.onnx vs torch) and of the low-res logits of
the N prompts end to end (encoder.onnx -> decoder.onnx vs torch encoder -> decoder).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import efficient_sam as es
from efficient_sam import transforms
from efficient_sam.config import parse_override

from .flops import DecoderCall, decoder_inputs
from .random_weights import randomize_
from .report import write_outputs
from .timing import machine_info, release_memory, time_fn

PROG = "esam-bench --onnx"
PHASES = ("encoder", "decoder x1", "decoder xN", "decoder xN +masks")
CPU = torch.device("cpu")


def file_bytes(path: Path) -> int:
    """Size of an .onnx file plus its external data (`<file>.data`) if any."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def rel_dev(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (the ONNX tests' measure)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _stats(t: dict[str, Any]) -> dict[str, Any]:
    return {"median_ms": t["median"], "min_ms": t["min"], "max_ms": t["max"], "all_ms": t["all"]}


def _session(path: Path, threads: int, only_outputs: list[str] | None = None):
    """An onnxruntime CPU session on `path`; with `only_outputs`, on a copy of the graph that keeps only
    those outputs (written beside the file as `<stem>.bench.onnx` for the load, then removed)."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if only_outputs is None:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    proto = onnx.load(str(path), load_external_data=False)  # the copy points at the same .data file
    keep = [o for o in proto.graph.output if o.name in only_outputs]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    copy = path.with_name(path.stem + ".bench.onnx")
    onnx.save_model(proto, str(copy))
    try:
        return ort.InferenceSession(str(copy), sess_options=so, providers=["CPUExecutionProvider"])
    finally:
        copy.unlink()


def _decoder_feeds(cfg, emb: np.ndarray, boxes: torch.Tensor, orig: tuple[int, int]) -> dict[str, np.ndarray]:
    """decoder.onnx inputs for box prompts in the input frame: corner points labelled 2 / 3."""
    n = boxes.shape[0]
    feeds = {"image_embeddings": emb.astype(np.float32), "point_coords": boxes.reshape(n, 2, 2).numpy().astype(np.float32),
             "point_labels": np.tile(np.array([[2.0, 3.0]], np.float32), (n, 1)),
             "orig_im_size": np.array(orig, np.float32)}
    if cfg.prompt_encoder.mask_prompt:
        g = cfg.image_encoder.grid_size
        feeds["mask_input"] = np.zeros((1, 1, 4 * g, 4 * g), np.float32)
        feeds["has_mask_input"] = np.zeros(1, np.float32)
    return feeds


def _match_tokens(onnx_low: np.ndarray, torch_low: np.ndarray) -> np.ndarray:
    """decoder.onnx returns every mask token; `decode(multimask_output=True)` tokens 1.. (or token 0)."""
    c = torch_low.shape[1]
    return onnx_low[:, 1:] if c == onnx_low.shape[1] - 1 else onnx_low[:, :c]


class TorchSide:
    """The fp32 torch model on the CPU: its timings per phase and its reference outputs."""

    def __init__(self, model, args) -> None:
        self.model, self.cfg = model, model.config
        s = self.cfg.image_encoder.img_size
        self.s = s
        self.x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(args.seed))
        self.decoder = DecoderCall(model)
        with torch.inference_mode():
            self.emb = model.image_encoder(self.x)
            _, self.boxes1 = decoder_inputs(model, 1, CPU)
            _, self.boxes = decoder_inputs(model, args.prompts, CPU)
            self.low = self.decoder(self.emb, self.boxes)[0]
        w, r = args.warmup, args.repeats
        self.times = {
            "encoder": _stats(time_fn(lambda: model.image_encoder(self.x), CPU, w, r)),
            "decoder x1": _stats(time_fn(lambda: self.decoder(self.emb, self.boxes1), CPU, w, r)),
            "decoder xN": _stats(time_fn(lambda: self.decoder(self.emb, self.boxes), CPU, w, r)),
        }
        if args.masks:
            self.times["decoder xN +masks"] = _stats(time_fn(
                lambda: transforms.postprocess_masks(self.decoder(self.emb, self.boxes)[0], (s, s), self.cfg), CPU, w, r))


def run_variant(name: str, variant: str, ref: TorchSide, folder: Path, args) -> dict[str, Any]:
    """Export `ref.model` as `variant` ("fp32", "fp16", "int8") into `folder`, time it, compare it."""
    from efficient_sam.onnx.export import export_model

    dtype, quant = ("fp16", None) if variant == "fp16" else ("fp32", "int8" if variant == "int8" else None)
    t0 = time.perf_counter()
    config = export_model(ref.model, folder, opset=args.opset, dtype=dtype, quantize=quant, overwrite=True)
    export_s = time.perf_counter() - t0
    enc_path, dec_path = folder / config["encoder"]["file"], folder / config["decoder"]["file"]
    sizes = {"encoder": file_bytes(enc_path), "decoder": file_bytes(dec_path)}
    enc = _session(enc_path, args.threads)
    dec_low = _session(dec_path, args.threads, ["iou_predictions", "low_res_masks"])
    dec_full = _session(dec_path, args.threads) if args.masks else None
    cfg, s, emb_t = ref.cfg, ref.s, ref.emb.numpy()
    x = ref.x.numpy()
    f1 = _decoder_feeds(cfg, emb_t, ref.boxes1, (s, s))
    fn = _decoder_feeds(cfg, emb_t, ref.boxes, (s, s))
    low_out = ["low_res_masks", "iou_predictions"]
    w, r = args.warmup, args.repeats
    onnx_times = {
        "encoder": _stats(time_fn(lambda: enc.run(None, {"images": x}), CPU, w, r)),
        "decoder x1": _stats(time_fn(lambda: dec_low.run(low_out, f1), CPU, w, r)),
        "decoder xN": _stats(time_fn(lambda: dec_low.run(low_out, fn), CPU, w, r)),
    }
    if args.masks:
        onnx_times["decoder xN +masks"] = _stats(time_fn(lambda: dec_full.run(None, fn), CPU, w, r))
    emb_o = enc.run(["image_embeddings"], {"images": x})[0]
    low_o = dec_low.run(["low_res_masks"], _decoder_feeds(cfg, emb_o, ref.boxes, (s, s)))[0]
    phases = {}
    for p in ref.times:
        t, o = ref.times[p], onnx_times[p]
        phases[p] = {"torch": t, "onnx": o, "ratio": o["median_ms"] / t["median_ms"]}
    del enc, dec_low, dec_full
    return {
        "model": name, "variant": variant, "img_size": s, "prompts": args.prompts, "phases": phases,
        "file_bytes": sizes, "files": {"encoder": str(enc_path), "decoder": str(dec_path)},
        "export_s": export_s,
        "deviation": {"embeddings": rel_dev(emb_o, emb_t), "low_res_logits": rel_dev(_match_tokens(low_o, ref.low.numpy()), ref.low.numpy())},
    }


def markdown(report: dict) -> str:
    a, m = report["args"], report["machine"]
    lines = [
        f"CPU `{m['cpu']}`, torch {m['torch']}, onnxruntime {report['onnxruntime']}, {a['threads']} threads "
        f"(torch and onnxruntime intra-op); opset {a['opset']}; {a['prompts']} prompts for decoder xN; warm-up "
        f"{a['warmup']}, repeats {a['repeats']}. ms: median [min-max].",
        "",
        "| model | variant | phase | torch ms | onnx ms | onnx / torch | encoder.onnx MB | decoder.onnx MB "
        "| dev. embeddings | dev. low-res logits |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(t):
        return f"{t['median_ms']:.2f} [{t['min_ms']:.2f}-{t['max_ms']:.2f}]"

    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | failed: {r['error']} |" + " |" * 7)
            continue
        mb, dv = r["file_bytes"], r["deviation"]
        for i, (p, ph) in enumerate(r["phases"].items()):
            label = p.replace("xN", f"x{r['prompts']}")
            extra = (f"{mb['encoder'] / 2**20:.2f} | {mb['decoder'] / 2**20:.2f} | {dv['embeddings']:.2e} | "
                     f"{dv['low_res_logits']:.2e}") if i == 0 else " |  |  | "
            lines.append(f"| {r['model']} | {r['variant']} | {label} | {ms(ph['torch'])} | {ms(ph['onnx'])} "
                         f"| {ph['ratio']:.2f} | {extra} |")
    lines += [""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["sam_vit_b", "efficient_sam_vitt"])
    p.add_argument("--prompts", type=int, default=64, help="box prompts in one decoder call (decoder xN)")
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="fp16: also an fp16 export row")
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8: also an int8-encoder export row")
    p.add_argument("--no-masks", dest="masks", action="store_false",
                   help="skip the decoder xN +masks phase (N x 4 masks of S x S floats: ~1 GiB at S=1024, N=64)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads and onnxruntime intra_op_num_threads (default: torch's current)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per phase (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per phase (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                   metavar="KEY=VALUE", help="config override for every model, e.g. --set encoder_depth=2")
    p.add_argument("--export-dir", default=None, help="keep the exports in DIR/<model>-<variant> (default: a temp folder)")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [m for m in args.models if m not in es.list_models()]
    if unknown:
        raise SystemExit(f"{PROG}: unknown model(s) {unknown}; available: {', '.join(es.list_models())}")
    if args.repeats < 1:
        raise SystemExit(f"{PROG}: --repeats must be >= 1")
    if args.warmup < 0:
        raise SystemExit(f"{PROG}: --warmup must be >= 0")
    if args.prompts < 1:
        raise SystemExit(f"{PROG}: --prompts must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"{PROG}: --threads must be >= 1")
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as e:
        raise SystemExit(f"{PROG}: needs onnx and onnxruntime (pip install 'efficient-sam-distill[onnx]'): {e}")
    from efficient_sam.onnx.export import check_opset, ExportError

    try:
        check_opset(args.opset)
    except ExportError as e:
        raise SystemExit(f"{PROG}: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    variants = ["fp32"] + (["fp16"] if args.dtype == "fp16" else []) + (["int8"] if args.quantize else [])
    tmp = None
    if args.export_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="esam-bench-onnx-")
        root = Path(tmp.name)
    else:
        root = Path(args.export_dir)
    results = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in args.models:
                try:
                    model = randomize_(es.build_model(name, **dict(args.overrides)), seed=args.seed).eval()
                    ref = TorchSide(model, args)
                except Exception as e:  # noqa: BLE001 - keep the other models, report the failure
                    results += [{"model": name, "variant": v, "error": f"{type(e).__name__}: {e}"} for v in variants]
                    print(f"{PROG}: {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
                    continue
                for v in variants:
                    print(f"{PROG}: {name} [{v}]", file=sys.stderr)
                    try:
                        results.append(run_variant(name, v, ref, root / f"{name}-{v}", args))
                    except Exception as e:  # noqa: BLE001
                        results.append({"model": name, "variant": v, "error": f"{type(e).__name__}: {e}"})
                        print(f"{PROG}: {name} [{v}] failed: {type(e).__name__}: {e}", file=sys.stderr)
                del model, ref
                release_memory(CPU)
    finally:
        if tmp is not None:
            tmp.cleanup()
    notes = [
        "weights are random (benchmarks.random_weights.randomize_, seeded); inputs: a seeded N(0, 1) (1, 3, S, S) "
        "image, boxes from benchmarks.flops.decoder_inputs",
        "torch: fp32 on the CPU, `model.image_encoder` and `model.decode(emb, boxes=...)` (multimask_output=True), "
        "under inference_mode; onnx: onnxruntime CPUExecutionProvider, inter-op 1 thread",
        "decoder x1 / xN: onnx decoder.onnx restricted to iou_predictions / low_res_masks (the torch call's work); "
        "decoder xN +masks: decoder.onnx as shipped, masks upscaled to S x S, vs decode + transforms.postprocess_masks",
        "onnx / torch: ratio of the medians (< 1: onnxruntime faster); file sizes include external data (.data)",
        "deviation: max |a - b| / max |b| vs the fp32 torch model, embeddings (encoder.onnx) and low-res logits "
        "of the N prompts end to end (encoder.onnx -> decoder.onnx); int8 quantizes the encoder's MatMuls only",
    ]
    if args.export_dir is None:
        notes.append("exports written to a temporary folder and removed (--export-dir keeps them)")
    report = {
        "command": PROG + " " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "machine": machine_info(CPU), "onnxruntime": onnxruntime.__version__, "args": vars(args),
        "results": results, "notes": notes,
    }
    md = markdown(report)
    print(md)
    write_outputs(report, md, args.json, args.markdown)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
