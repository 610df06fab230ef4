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

`--hq` adds, right after each model's row, its HQ-SAM variant `<model>+hq` (`hq_adapter.build_hq_model`:
the base plus the HQ token, its MLP and the fusion convs), timed the same way on the HQ path:
`encoder` = `encode_image_hq` (encoder + the once-per-image global-local fusion), the decoders take
the HQ features and return SAM + HQ logits (one mask per prompt), and a table "HQ over base" gives the
added parameters, GMACs and latency per backbone.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import threading
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

import efficient_sam as es
from efficient_sam import transforms
from efficient_sam.config import MaskDecoderConfig, PromptEncoderConfig, parse_override

from . import flops as F_

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "photos" / "truck.jpg"
DEFAULT_BOX = (425, 600, 700, 875)  # the SAM example's box on truck.jpg
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PHASES = ("encoder", "decoder_1", "decoder_n", "e2e")
HQ_SUFFIX = "+hq"


# ----------------------------------------------------------------------------------------------
# Machine, memory, timing
# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import segment_anything  # noqa: F401

        from importlib.metadata import version

        info["segment_anything"] = version("segment-anything")
    except Exception:  # noqa: BLE001
        pass
    return info


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:  # give freed heap back to the OS so the next RSS baseline is honest (glibc only)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory over a block: CUDA `max_memory_allocated`, or on CPU the process RSS sampled
    every few milliseconds, both relative to `baseline` bytes (see `memory_kind`)."""

    def __init__(self, device: torch.device, baseline: int = 0, interval: float = 0.002) -> None:
        self.device, self.baseline, self.interval = device, baseline, interval
        self.peak = 0
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = _rss_bytes()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())

    @property
    def mb(self) -> float:
        return max(self.peak - self.baseline, 0) / 2**20


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated during the end-to-end runs (weights included)"
    return "CPU: peak process RSS during the end-to-end runs minus RSS before the model was built (sampled)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    """Warm-up calls, then `repeats` timed calls -> ms statistics (CUDA events on GPU)."""
    first = None
    with torch.inference_mode():
        for i in range(warmup):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if i == 0:
                first = (time.perf_counter() - t0) * 1e3
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                _sync(device)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(float(start.elapsed_time(end)))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
    return {
        "median": statistics.median(times), "min": min(times), "max": max(times),
        "mean": statistics.fmean(times), "n": len(times), "first_warmup_ms": first, "all": times,
    }


# ----------------------------------------------------------------------------------------------
# The two implementations behind one small interface
# ----------------------------------------------------------------------------------------------


class ReferenceUnavailable(RuntimeError):
    pass


def check_reference(cfg) -> None:
    """Raise `ReferenceUnavailable` unless the official SAM can express `cfg`."""
    if cfg.family != "sam":
        raise ReferenceUnavailable(
            "no official implementation for EfficientSAM is installed; --reference covers SAM models only"
        )
    if cfg.mask_decoder != MaskDecoderConfig() or cfg.prompt_encoder != PromptEncoderConfig():
        raise ReferenceUnavailable("the official SAM has a fixed prompt encoder / mask decoder; overrides differ")
    enc = cfg.image_encoder
    if not enc.use_rel_pos or enc.pos_embed != "grid" or enc.window_size <= 0:
        raise ReferenceUnavailable("the official SAM encoder needs rel-pos, a grid pos-embed and windows")


def build_official(cfg) -> torch.nn.Module:
    """The official `segment_anything.Sam` with our config's architecture (SAM family only)."""
    check_reference(cfg)
    enc = cfg.image_encoder
    try:
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    except ImportError as e:  # pragma: no cover - a dev dependency
        raise ReferenceUnavailable(f"segment_anything is not installed ({e}); pip install segment-anything") from e
    g = enc.grid_size
    md = cfg.mask_decoder
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=enc.depth, embed_dim=enc.embed_dim, img_size=enc.img_size, mlp_ratio=enc.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=enc.norm_eps), num_heads=enc.num_heads,
            patch_size=enc.patch_size, qkv_bias=enc.qkv_bias, use_rel_pos=True,
            global_attn_indexes=tuple(enc.global_attn_indexes), window_size=enc.window_size,
            out_chans=enc.out_chans,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_encoder.embed_dim, image_embedding_size=(g, g),
            input_image_size=(enc.img_size, enc.img_size), mask_in_chans=cfg.prompt_encoder.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=md.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=md.transformer_depth, embedding_dim=md.transformer_dim, mlp_dim=md.transformer_mlp_dim,
                num_heads=md.transformer_num_heads,
            ),
            transformer_dim=md.transformer_dim, iou_head_depth=md.iou_head_depth,
            iou_head_hidden_dim=md.iou_head_hidden_dim,
        ),
        pixel_mean=list(cfg.pixel_mean), pixel_std=list(cfg.pixel_std),
    ).eval()


def _scored_multimask(cfg) -> bool:
    """A box prompt is scored from the single-mask output on SAM, best-of-3 on EfficientSAM (DESIGN.md)."""
    return cfg.family == "efficient_sam"


class OursRunner:
    impl = "ours"

    def __init__(self, model, device: torch.device, dtype: torch.dtype, compile_: bool | str) -> None:
        self.model = model.to(device=device, dtype=dtype)
        self.cfg = model.config
        self.device, self.dtype = device, dtype
        self.encoder = self.model.image_encoder
        self.decoder = F_.DecoderCall(self.model)
        self.decoder_single = F_.DecoderCall(self.model, multimask_output=_scored_multimask(self.cfg))
        if compile_:
            mode = compile_ if isinstance(compile_, str) else None
            self.encoder = torch.compile(self.encoder, mode=mode)
            self.decoder = torch.compile(self.decoder, mode=mode)
            self.decoder_single = torch.compile(self.decoder_single, mode=mode)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decoder_extra_inputs(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inputs the decoder takes besides the embedding and the boxes (none here)."""
        return ()

    def decode(self, emb: torch.Tensor, boxes: torch.Tensor, *extra: torch.Tensor):
        return self.decoder(emb, boxes, *extra)

    def _encode_for_decoder(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return self.encoder(x), ()

    def end_to_end(self, images: list[np.ndarray], box: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = torch.cat([transforms.preprocess(im, cfg, self.device) for im in images]).to(self.dtype)
        emb, extra = self._encode_for_decoder(x)
        size = images[0].shape[:2]
        boxes = transforms.transform_boxes(box.to(self.device).expand(len(images), 4), size, cfg)
        low, iou = self.decoder_single(emb, boxes, *extra)  # one prompt per image, one decoder call
        if low.shape[1] > 1:
            low = low[torch.arange(low.shape[0], device=low.device), iou.argmax(1)][:, None]
        return transforms.postprocess_masks(low.float(), size, cfg) > cfg.mask_threshold


class HQRunner(OursRunner):
    """An HQ-SAM model (`build_hq_model`) on its HQ path: the encoder call is `encode_image_hq` (encoder +
    the fusion, once per image), the decoder calls take the HQ features and return SAM + HQ logits
    (`hq_token_only=False`; one mask per prompt whatever `multimask_output`). `torch.compile` compiles
    these two calls the way `OursRunner` compiles the encoder and the decoder."""

    impl = "ours"

    def __init__(self, model, device: torch.device, dtype: torch.dtype, compile_: bool | str) -> None:
        if not getattr(model, "is_hq", False):
            raise ValueError("HQRunner needs an HQ model (hq_adapter.build_hq_model)")
        self.model = model.to(device=device, dtype=dtype)
        self.cfg = model.config
        self.device, self.dtype = device, dtype
        self.encoder = F_.HQEncoderCall(self.model)
        self.decoder = F_.HQDecoderCall(self.model)
        self.decoder_single = F_.HQDecoderCall(self.model, multimask_output=_scored_multimask(self.cfg))
        if compile_:
            mode = compile_ if isinstance(compile_, str) else None
            self.encoder = torch.compile(self.encoder, mode=mode)
            self.decoder = torch.compile(self.decoder, mode=mode)
            self.decoder_single = torch.compile(self.decoder_single, mode=mode)

    def decoder_extra_inputs(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Random HQ features (B_img, D/8, 4h, 4w) for `emb` (B_img, D, h, w), like the random embedding."""
        b, d, h, w = emb.shape
        return (torch.randn(b, d // 8, 4 * h, 4 * w, device=emb.device).to(emb.dtype),)

    def _encode_for_decoder(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        emb, hq = self.encoder(x)
        return emb, (hq,)


class OfficialRunner:
    """segment_anything's modules, used the way its `SamPredictor` uses them.

    For bf16/fp16 the (tiny) official prompt encoder stays fp32 and its outputs are cast, since the
    official code multiplies fp32 coordinates with its PE matrix and fails in low precision.
    """

    impl = "official"

    def __init__(self, ours_model, device: torch.device, dtype: torch.dtype, compile_: bool | str) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        self.cfg = ours_model.config
        official = build_official(self.cfg)
        official.load_state_dict({k: v.float() for k, v in ours_model.state_dict().items()}, strict=True)
        official.to(device)
        official.image_encoder.to(dtype)
        official.mask_decoder.to(dtype)
        self.model = official
        self.device, self.dtype = device, dtype
        self.resize = ResizeLongestSide(official.image_encoder.img_size)
        self.encoder = official.image_encoder
        self.decoder = self._decode
        if compile_:
            mode = compile_ if isinstance(compile_, str) else None
            self.encoder = torch.compile(self.encoder, mode=mode)
            self.decoder = torch.compile(self._decode, mode=mode)

    def _decode(self, emb: torch.Tensor, boxes: torch.Tensor, multimask_output: bool = True):
        pe = self.model.prompt_encoder
        sparse, dense = pe(points=None, boxes=boxes, masks=None)
        return self.model.mask_decoder(
            image_embeddings=emb, image_pe=pe.get_dense_pe().to(emb.dtype),
            sparse_prompt_embeddings=sparse.to(emb.dtype), dense_prompt_embeddings=dense.to(emb.dtype),
            multimask_output=multimask_output,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decoder_extra_inputs(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ()

    def decode(self, emb: torch.Tensor, boxes: torch.Tensor):
        return self.decoder(emb, boxes)

    def end_to_end(self, images: list[np.ndarray], box: torch.Tensor) -> torch.Tensor:
        m = self.model
        xs = []
        for im in images:  # SamPredictor.set_image
            inp = torch.as_tensor(self.resize.apply_image(im), device=self.device).permute(2, 0, 1).contiguous()
            xs.append(m.preprocess(inp[None].float()))
        input_size = tuple(int(s) for s in self.resize.get_preprocess_shape(*images[0].shape[:2], self.resize.target_length))
        emb = self.encoder(torch.cat(xs).to(self.dtype))
        size = images[0].shape[:2]
        boxes = self.resize.apply_boxes_torch(box.to(self.device)[None], size)
        out = []
        for i in range(len(images)):  # the official mask decoder takes one image embedding per call
            low, _ = self.decoder(emb[i : i + 1], boxes, False)
            out.append(m.postprocess_masks(low.float(), input_size, size) > m.mask_threshold)
        return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------


def load_photo(path: str | None) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    p = Path(path) if path else DEFAULT_IMAGE
    if p.exists():
        img = np.array(Image.open(p).convert("RGB"))
        box = DEFAULT_BOX if (path is None and img.shape[:2] == (1200, 1800)) else None
    else:  # no shared data: a smooth synthetic 1200x1800 image
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

    _release_memory(device)
    baseline = 0 if device.type == "cuda" else _rss_bytes()
    torch.manual_seed(args.seed)
    phase("build")
    if hq:
        from hq_adapter import build_hq_model

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
    _release_memory(device)
    return res


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------


def _g(v: float | None) -> str:
    """1 decimal for large numbers, 3 significant digits for small ones (tiny test configs); "-" for none."""
    if v is None:
        return "-"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def _ms(v: float) -> str:
    """A signed latency difference: 1 decimal, 2 below 10 ms (GPU decoders)."""
    return f"{v:+.1f}" if abs(v) >= 10 else f"{v:+.2f}"


def _pct(added: float | None, base: float | None) -> str:
    return f"{100 * added / base:+.1f}%" if added is not None and base else "-"


def _fmt_lat(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['median']:.1f} ({d['min']:.1f}–{d['max']:.1f})"


def ratios(results: list[dict]) -> list[dict]:
    out = []
    by = {(r["model"], r["impl"]): r for r in results if "latency_ms" in r}
    for (model, impl), r in by.items():
        ref = by.get((model, "official"))
        if impl != "ours" or ref is None:
            continue
        out.append({
            "model": model,
            **{p: r["latency_ms"][p]["median"] / ref["latency_ms"][p]["median"] for p in PHASES},
        })
    return out


def hq_overhead(results: list[dict]) -> list[dict]:
    """Per backbone with both rows timed: what the HQ variant adds over its base (ours vs ours).
    Latency: differences of medians, in ms and relative to the base."""
    out = []
    by = {(r["model"], r["impl"]): r for r in results if "latency_ms" in r}
    for r in results:
        if not r.get("hq") or "latency_ms" not in r:
            continue
        base = by.get((r["base_model"], "ours"))
        if base is None:
            continue
        row: dict[str, Any] = {
            "model": r["base_model"], "params_base": base["params"], "params_added": r["params"] - base["params"],
        }
        for key in ("gmacs_encoder", "gmacs_decoder_per_prompt"):
            a, b = r.get(key), base.get(key)
            row[f"{key}_added"] = None if a is None or b is None else a - b
            row[f"{key}_base"] = b
        for p in PHASES:
            b = base["latency_ms"][p]["median"]
            row[f"{p}_base_ms"] = b
            row[f"{p}_added_ms"] = r["latency_ms"][p]["median"] - b
        out.append(row)
    return out


def markdown(report: dict) -> str:
    a = report["args"]
    n = a["prompts"]
    lines = [
        f"Device `{report['machine'].get('gpu', report['machine']['cpu'])}` ({a['device']}), dtype {a['dtype']}, "
        f"batch {a['batch_size']}, input {a['image_size']} px, torch {report['machine']['torch']}, "
        f"{report['machine']['torch_threads']} threads, compile={a['compile']}, warm-up {a['warmup']}, "
        f"repeats {a['repeats']}. Latency in ms: median (min–max).",
        "",
        f"| model | impl | params (M) | encoder GMACs | decoder GMACs / prompt | encoder | decoder, 1 box "
        f"| decoder, {n} boxes | end to end | img/s | peak mem (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['impl']} | error: {r['error'][:80]} |||||||||")
            continue
        lat = r["latency_ms"]
        lines.append(
            f"| {r['model']} | {r['impl']} | {r['params'] / 1e6:.2f} | {_g(r.get('gmacs_encoder'))} | "
            f"{_g(r.get('gmacs_decoder_per_prompt'))} | {_fmt_lat(lat['encoder'])} | {_fmt_lat(lat['decoder_1'])} | "
            f"{_fmt_lat(lat['decoder_n'])} | {_fmt_lat(lat['e2e'])} | {r['throughput_img_s']:.2f} | "
            f"{r['peak_mem_mb']:.0f} |"
        )
    if report["ratios"]:
        lines += [
            "",
            f"Ours / official (median latency; < 1 means ours is faster):",
            "",
            f"| model | encoder | decoder, 1 box | decoder, {n} boxes | end to end |",
            "|---|---|---|---|---|",
        ]
        for q in report["ratios"]:
            lines.append(
                f"| {q['model']} | {q['encoder']:.2f} | {q['decoder_1']:.2f} | {q['decoder_n']:.2f} | {q['e2e']:.2f} |"
            )
    hq = report.get("hq_overhead") or []
    if hq:
        lines += [
            "",
            "HQ over base (`<model>+hq` minus `<model>`, ours; latency: difference of medians, in ms and % of the "
            "base; HQ encoder = encoder + the once-per-image fusion; HQ decoder = with the HQ features, per call):",
            "",
            f"| model | params added | encoder GMACs added | decoder GMACs / prompt added | encoder | decoder, 1 box "
            f"| decoder, {n} boxes | end to end |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for q in hq:
            cells = [
                f"{q['params_added']:,} ({_pct(q['params_added'], q['params_base'])})",
                f"{_g(q['gmacs_encoder_added'])} ({_pct(q['gmacs_encoder_added'], q['gmacs_encoder_base'])})",
                f"{_g(q['gmacs_decoder_per_prompt_added'])} "
                f"({_pct(q['gmacs_decoder_per_prompt_added'], q['gmacs_decoder_per_prompt_base'])})",
            ] + [f"{_ms(q[f'{p}_added_ms'])} ms ({_pct(q[f'{p}_added_ms'], q[f'{p}_base_ms'])})" for p in PHASES]
            lines.append(f"| {q['model']} | " + " | ".join(cells) + " |")
    fv = [r for r in report["results"] if "fvcore_gmacs_encoder" in r]
    if fv:
        lines += [
            "",
            "GMACs cross-check (FlopCounterMode on meta / 2 vs fvcore with an SDPA handle; fvcore also counts norms):",
            "",
            "| model | encoder FlopCounterMode | encoder fvcore | diff | decoder FlopCounterMode | decoder fvcore | diff |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in fv:
            lines.append(
                f"| {r['model']} | {r['gmacs_encoder']:.5g} | {r['fvcore_gmacs_encoder']:.5g} | "
                f"{100 * r['fvcore_rel_diff_encoder']:+.2f}% | {r['gmacs_decoder_per_prompt']:.5g} | "
                f"{r['fvcore_gmacs_decoder_per_prompt']:.5g} | {100 * r['fvcore_rel_diff_decoder']:+.2f}% |"
            )
    notes = report.get("notes", [])
    if notes:
        lines += [""] + [f"- {s}" for s in notes]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str | Path) -> None:
    """Latency (end to end, median) vs parameters, log-log, drawn with PIL."""
    from PIL import ImageDraw, ImageFont

    pts = [r for r in report["results"] if "latency_ms" in r]
    W, H = 900, 600
    L, R, T, B = 90, 30, 50, 70
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    a = report["args"]
    d.text((L, 15), f"End-to-end latency vs parameters ({a['device']}, {a['dtype']}, batch {a['batch_size']}, "
                    f"{a['image_size']} px)", fill="black", font=font)
    if not pts:
        im.save(path)
        return
    xs = [r["params"] / 1e6 for r in pts]
    ys = [r["latency_ms"]["e2e"]["median"] for r in pts]

    def bounds(v: list[float]) -> tuple[float, float]:
        lo, hi = math.log10(min(v)), math.log10(max(v))
        pad = max(0.15, (1.0 - (hi - lo)) / 2)  # at least one decade shown
        return lo - pad, hi + pad

    lo_x, hi_x = bounds(xs)
    lo_y, hi_y = bounds(ys)

    def px(v: float) -> float:
        return L + (math.log10(v) - lo_x) / (hi_x - lo_x) * (W - L - R)

    def py(v: float) -> float:
        return H - B - (math.log10(v) - lo_y) / (hi_y - lo_y) * (H - T - B)

    def ticks(lo: float, hi: float):
        for e in range(math.floor(lo), math.ceil(hi) + 1):
            for m in range(1, 10):
                v = m * 10.0**e
                if lo <= math.log10(v) <= hi:
                    yield v, m

    for v, m in ticks(lo_x, hi_x):
        x = px(v)
        d.line([(x, T), (x, H - B)], fill=(170, 170, 170) if m == 1 else (225, 225, 225))
        if m in (1, 2, 5):
            d.text((x - 8, H - B + 8), f"{v:g}", fill="black", font=font)
    for v, m in ticks(lo_y, hi_y):
        y = py(v)
        d.line([(L, y), (W - R, y)], fill=(170, 170, 170) if m == 1 else (225, 225, 225))
        if m in (1, 2, 5):
            d.text((L - 60, y - 7), f"{v:g}", fill="black", font=font)
    d.rectangle([L, T, W - R, H - B], outline="black")
    d.text(((L + W - R) // 2 - 80, H - 35), "parameters (millions, log scale)", fill="black", font=font)
    d.text((8, T - 18), "end-to-end latency, ms (log)", fill="black", font=font)
    colors = {"ours": (31, 119, 180), "official": (214, 39, 40), "hq": (44, 160, 44)}
    placed: list[tuple[float, float, float, float]] = []
    for r, x, y in sorted(zip(pts, xs, ys), key=lambda t: -t[2]):  # top to bottom
        cx, cy = px(x), py(y)
        c = colors["hq"] if r.get("hq") else colors.get(r["impl"], (0, 0, 0))
        if r["impl"] == "official":
            d.rectangle([cx - 5, cy - 5, cx + 5, cy + 5], outline=c, width=2)
        else:
            d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=c)
        label = f"{r['model']} ({r['impl']}) {y:.0f} ms"
        x0, x1 = d.textbbox((0, 0), label, font=font)[0::2]
        lw, lh = x1 - x0, 14
        lx, ly = cx + 8, cy - lh
        if lx + lw > W - 4:
            lx = cx - 8 - lw
        while any(lx < b[2] and b[0] < lx + lw and ly < b[3] and b[1] < ly + lh for b in placed):
            ly += lh  # below the labels already drawn
        placed.append((lx, ly, lx + lw, ly + lh))
        d.text((lx, ly), label, fill=c, font=font)
    lx = W - R - 190  # legend above the frame, right
    d.ellipse([lx, 10, lx + 10, 20], fill=colors["ours"])
    d.text((lx + 16, 8), "ours", fill="black", font=font)
    if any(r.get("hq") for r in pts):
        d.ellipse([lx - 90, 10, lx - 80, 20], fill=colors["hq"])
        d.text((lx - 74, 8), "ours + HQ", fill="black", font=font)
    d.rectangle([lx, 28, lx + 10, 38], outline=colors["official"], width=2)
    d.text((lx + 16, 26), "official segment_anything", fill="black", font=font)
    im.save(path)


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
        "command": "esam-bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
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
