"""ONNX export of any of our models (SAM, EfficientSAM, HQ on either): `encoder.onnx`, `decoder.onnx`
and `config.json` (layout and interfaces: `efficient_sam.onnx.format`).

Exporter: torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`). The graphs are
written for tracing (`_EncoderGraph`, `_DecoderGraph`): every shape-dependent value is a traced tensor
expression (the encoder batch, the number of points, including 0 for a mask-only prompt, the prompt
batch, the original image size of the upscaling) and there is no data-dependent Python control flow;
the tests run each file at several batch sizes, point counts and image sizes against the torch model.
Why this one: it takes the official interface's `dynamic_axes` as they are (the exporter the official
SAM / HQ-SAM scripts use, so our files and theirs are compared like for like), and it exports in about a
second where the dynamo exporter took 10 s for the small test decoder. The dynamo exporter
(`dynamo=True`, onnxscript) also gives correct dynamic shapes on these graphs when given `Dim` specs
(checked on the decoder: prompt batch 1-4, 0-5 points, any image size, same outputs), so it is the
way forward when torch drops the TorchScript exporter (deprecated since torch 2.9).

The graphs reuse our modules (the same weights and the same ops as `Sam.encode_image*` / `Sam.decode`
+ `transforms.postprocess_masks`); what changes is only what tracing cannot express: the encoder's
position embedding is resized once at export (a constant), the decoder always gives every prompt its
own copy of the image side (the torch model shares it: same values, row by row), EfficientSAM's
pad/truncate to `max_points` is a pad-then-slice, and the no-mask / mask choice is the official
`has_mask_input` blend (exact: the weights are 0 and 1).

Options: opset (default 17; 14, the lowest with the attention and resize ops used, up to the highest
torch's exporter writes, 20 here), dtype fp32 | fp16 (weights and compute in fp16 through
`onnxruntime.transformers.float16`; inputs and outputs stay float32, the Fourier prompt encoding, the
normalisations, softmax and resizes stay fp32), `quantize="int8"` (onnxruntime dynamic quantization of
the encoder's MatMul weights, per channel, on the fp32 graph). The decoder stays fp32 under int8: it
is 4% of ViT-B's weights and 0.6% of ViT-H's, and quantizing it too cost small masks accuracy in our
measurement (mask IoU 0.87 against fp32 on a small mask, where quantizing the encoder alone keeps
0.97). A graph whose weights exceed `EXTERNAL_DATA_BYTES` (ViT-H's encoder: 2.5 GB, over protobuf's
2 GB limit) is stored with ONNX external data (`<file>.data` beside it, found there by onnxruntime);
`external_data=True` forces it. Every file is checked with `onnx.checker.check_model` (by path, which
also works over 2 GB) and run once in onnxruntime.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..modeling.sam import Sam
from ..registry import config_name
from . import format as fmt

__all__ = ["export_model", "ExportError", "DEFAULT_OPSET", "MIN_OPSET", "EXTERNAL_DATA_BYTES"]

DEFAULT_OPSET = 17
MIN_OPSET = 14  # scaled_dot_product_attention and Resize with dynamic sizes
EXTERNAL_DATA_BYTES = 1_800_000_000  # below protobuf's 2 GB with room for the graph itself
# ops kept in fp32 by the fp16 conversion: the Fourier prompt encoding (fp16 would scramble its phases,
# as in the torch model) and the normalisations / softmax (fp16 range)
_FP32_OPS = ["Sin", "Cos", "ReduceMean", "Pow", "Sqrt", "LayerNormalization", "Softmax", "Resize", "Range",
             "CumSum", "Div", "Erf", "GroupNormalization", "InstanceNormalization"]


class ExportError(RuntimeError):
    """The model cannot be exported as asked (bad option, failed check or smoke run)."""


def _max_opset() -> int:
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as m  # torch >= 2.1
        return int(m)
    except ImportError:  # pragma: no cover - other torch versions
        return 20


def check_opset(opset: Any) -> int:
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise ExportError(f"opset must be an int, got {opset!r}")
    hi = _max_opset()
    if not MIN_OPSET <= opset <= hi:
        raise ExportError(
            f"opset {opset} is not supported: the exporter writes opsets {MIN_OPSET} to {hi} for these models "
            f"(default {DEFAULT_OPSET})"
        )
    return int(opset)


# ---------------------------------------------------------------------------------------------------
# The traced graphs


class _EncoderGraph(nn.Module):
    """(B, 3, S, S) preprocessed images -> image_embeddings (B, 256, h, w) [, interm_embeddings (1, B, h, w, C)]."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        enc = model.image_encoder
        self.patch_embed, self.blocks, self.neck = enc.patch_embed, enc.blocks, enc.neck
        g = enc.cfg.grid_size
        with torch.no_grad():
            self.register_buffer("pos", enc.pos_embed_at((g, g)).detach().clone())
        self.early = model.config.hq.early_block if model.is_hq else None

    def forward(self, images: torch.Tensor):
        x = self.patch_embed(images) + self.pos
        early = None
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == self.early:
                early = x
        emb = self.neck(x.permute(0, 3, 1, 2))
        return emb if early is None else (emb, early[None])


class _DecoderGraph(nn.Module):
    """The official decoder interface (see `format`) over our prompt encoder + mask decoder + the family's
    mask upscaling."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        cfg = model.config
        self.pe, self.md = model.prompt_encoder, model.mask_decoder
        self.hq, self.mask_prompt = model.is_hq, cfg.prompt_encoder.mask_prompt
        self.max_points = cfg.prompt_encoder.max_points
        self.stretch = cfg.resize == "stretch"
        self.img_size = cfg.image_encoder.img_size
        with torch.no_grad():
            self.register_buffer("dense_pe", self.pe.get_dense_pe().detach().clone())

    def forward(self, image_embeddings, *args):
        args = list(args)
        interm = args.pop(0) if self.hq else None
        coords, labels = args.pop(0), args.pop(0)
        if self.mask_prompt:
            mask_input, has_mask = args.pop(0), args.pop(0)
        orig_im_size = args.pop(0)
        if self.hq:
            multimask, hq_only = args.pop(0), args.pop(0)
        if self.max_points is not None:  # EfficientSAM: pad with (-1, -1, label -1) to exactly max_points
            b = coords.shape[0]
            coords = torch.cat([coords, coords.new_full((b, self.max_points, 2), -1.0)], dim=1)[:, : self.max_points]
            labels = torch.cat([labels, labels.new_full((b, self.max_points), -1.0)], dim=1)[:, : self.max_points]
        sparse = self.pe.embed_points(coords, labels)
        src = image_embeddings
        if self.mask_prompt:
            dense = has_mask * self.pe.mask_downscaling(mask_input) + (1 - has_mask) * self.pe.no_mask_embed.weight.reshape(
                1, -1, 1, 1
            )
            src = src + dense
        b = sparse.shape[0]
        src = src.expand(b, -1, -1, -1)
        md = self.md
        parts = [md.iou_token.weight, md.mask_tokens.weight] + ([md.hf_token.weight] if self.hq else [])
        tokens = torch.cat([torch.cat(parts, dim=0).unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        hs, keys = md.transformer(src, self.dense_pe, tokens)
        c, h, w = src.shape[1], src.shape[2], src.shape[3]
        feats = keys.transpose(1, 2).reshape(b, c, h, w)
        iou_all = md.iou_prediction_head(hs[:, 0, :])
        if not self.hq:
            low, iou = md.mask_logits(hs, feats), iou_all
        else:
            hq_feats = md.hq_features(image_embeddings, interm[0]).expand(b, -1, -1, -1)
            masks = md.mask_logits(hs, feats, hq_feats)
            n = md.num_mask_tokens
            iou_m, best = iou_all[:, 1:n].max(dim=1, keepdim=True)
            multi = multimask > 0.5
            iou = torch.where(multi, iou_m, iou_all[:, :1])
            best = torch.where(multi, best + 1, torch.zeros_like(best))
            sam = masks.gather(1, best[..., None, None].expand(-1, -1, masks.shape[2], masks.shape[3]))
            hq = masks[:, n:]
            low = torch.where(hq_only > 0.5, hq, sam + hq)
        return self._upscale(low, orig_im_size), iou, low

    def _upscale(self, low: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        size = orig_im_size.to(torch.int64)
        oh, ow = size[0], size[1]
        if self.stretch:
            return nn.functional.interpolate(low, size=(oh, ow), mode="bicubic", align_corners=False)
        s = self.img_size
        masks = nn.functional.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)
        # transforms.longest_side_size, in float64 as in Python
        hw = orig_im_size.to(torch.float64)
        pre = torch.floor(hw * (s / torch.max(hw)) + 0.5).to(torch.int64).clamp(min=1)
        masks = masks[:, :, : pre[0], : pre[1]]
        return nn.functional.interpolate(masks, size=(oh, ow), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------------
# Export


def _dummy_decoder_inputs(model: Sam, b: int = 2, n: int = 3) -> dict[str, torch.Tensor]:
    cfg, s = model.config, model.img_size
    g = cfg.image_encoder.grid_size
    dim = cfg.prompt_encoder.embed_dim
    gen = torch.Generator().manual_seed(0)
    x = {"image_embeddings": torch.randn(1, dim, g, g, generator=gen)}
    if model.is_hq:
        x["interm_embeddings"] = torch.randn(1, 1, g, g, cfg.image_encoder.embed_dim, generator=gen)
    x["point_coords"] = torch.rand(b, n, 2, generator=gen) * s
    x["point_labels"] = torch.tensor([[1.0, 0.0, -1.0][: n]] * b) if n <= 3 else torch.ones(b, n)
    if cfg.prompt_encoder.mask_prompt:
        x["mask_input"] = torch.randn(b, 1, 4 * g, 4 * g, generator=gen)
        x["has_mask_input"] = torch.ones(1)
    x["orig_im_size"] = torch.tensor([float(s) * 0.75, float(s)])
    if model.is_hq:
        x["multimask_output"] = torch.ones(1)
        x["hq_token_only"] = torch.zeros(1)
    return x


def _decoder_dynamic_axes(model: Sam) -> dict[str, dict[int, str]]:
    ax = {
        "image_embeddings": {0: "num_images"},
        "point_coords": {0: "num_prompts", 1: "num_points"},
        "point_labels": {0: "num_prompts", 1: "num_points"},
        "masks": {0: "num_prompts", 2: "height", 3: "width"},
        "iou_predictions": {0: "num_prompts"},
        "low_res_masks": {0: "num_prompts"},
    }
    if model.config.prompt_encoder.mask_prompt:
        ax["mask_input"] = {0: "num_mask_inputs"}
    if model.is_hq:
        ax["interm_embeddings"] = {0: "num_interm", 1: "num_images"}
    return ax


def _torch_export(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes, opset: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on constant shapes; deprecation notice of the exporter
        torch.onnx.export(
            module, args, str(path), input_names=list(input_names), output_names=list(output_names),
            dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )


def _param_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _save(proto, path: Path, external: bool) -> None:
    import onnx

    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))


def _set_output_shapes(proto, shapes: dict[str, tuple]) -> None:
    """Declare the output shapes (ints or symbolic names): the tracer's own guesses name wrong axes."""
    for out in proto.graph.output:
        if out.name not in shapes:
            continue
        dims = out.type.tensor_type.shape.dim
        del dims[:]
        for d in shapes[out.name]:
            dim = dims.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = int(d)


def _set_metadata(proto, meta: dict[str, Any]) -> None:
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v if isinstance(v, str) else json.dumps(v)


def _to_fp16(path: Path):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = convert_float_to_float16(str(path), keep_io_types=True, op_block_list=_FP32_OPS)
    from onnxruntime.transformers.onnx_model import OnnxModel

    graph = OnnxModel(proto)
    graph.topological_sort()  # the converter appends the input casts at the end
    return graph.model


def _quantize_int8(src: Path, dst: Path, external: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], use_external_data_format=external)


def _smoke_run(path: Path, feeds: dict[str, np.ndarray], expect: dict[str, tuple]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        outs = dict(zip(names, sess.run(None, feeds)))
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"smoke run of {path.name} in onnxruntime failed: {e}") from e
    for name, shape in expect.items():
        got = outs[name].shape
        if tuple(got) != tuple(shape) or not np.isfinite(outs[name]).all():
            raise ExportError(f"smoke run of {path.name}: output {name} has shape {got} (expected {shape}) or non-finite values")
    return outs


def export_model(
    model: Sam,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
    dtype: str = "fp32",
    quantize: str | None = None,
    overwrite: bool = False,
    external_data: bool | None = None,
) -> dict[str, Any]:
    """Write encoder.onnx, decoder.onnx and config.json for `model` into `out_dir`; returns the config.

    `external_data`: None = only for graphs over `EXTERNAL_DATA_BYTES`; True / False force it.
    Raises ExportError for a bad option, an existing export without `overwrite`, or a failed check."""
    import onnx

    if not isinstance(model, Sam):
        raise ExportError(f"expected an efficient_sam Sam model, got {type(model).__name__}")
    opset = check_opset(opset)
    if dtype not in ("fp32", "fp16"):
        raise ExportError(f"dtype must be 'fp32' or 'fp16', got {dtype!r}")
    if quantize not in (None, "int8"):
        raise ExportError(f"quantize must be None or 'int8', got {quantize!r}")
    if quantize and dtype != "fp32":
        raise ExportError("--quantize int8 quantizes the fp32 graphs: use it with dtype fp32")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace its export")
        for f in (fmt.CONFIG_FILE, fmt.ENCODER_FILE, fmt.DECODER_FILE):
            for p in (out / f, out / (f + ".data")):
                if p.exists():
                    p.unlink()
    out.mkdir(parents=True, exist_ok=True)

    cfg = model.config
    p0 = next(model.parameters())
    if p0.dtype != torch.float32 or p0.device.type != "cpu":  # traced in fp32 on the CPU (fp16 is converted after)
        model = copy.deepcopy(model).float().cpu()
    was_training = model.training
    model.eval()
    if name is None:  # the registered name of the architecture, else custom_<family>; "+hq" for HQ models
        name = (config_name(dataclasses.replace(cfg, hq=None)) or f"custom_{cfg.family}") + ("+hq" if cfg.hq else "")
    s, g = cfg.image_encoder.img_size, cfg.image_encoder.grid_size
    hq, mask_prompt = model.is_hq, cfg.prompt_encoder.mask_prompt
    enc_graph, dec_graph = _EncoderGraph(model).eval(), _DecoderGraph(model).eval()
    enc_outputs = fmt.HQ_ENCODER_OUTPUTS if hq else fmt.ENCODER_OUTPUTS
    dec_inputs = fmt.decoder_inputs(mask_prompt, hq)
    enc_axes = {"images": {0: "batch"}, "image_embeddings": {0: "batch"}}
    if hq:
        enc_axes["interm_embeddings"] = {1: "batch"}
    ext = {
        "encoder": _param_bytes(enc_graph) > EXTERNAL_DATA_BYTES if external_data is None else bool(external_data),
        "decoder": _param_bytes(dec_graph) > EXTERNAL_DATA_BYTES if external_data is None else bool(external_data),
    }
    labels = [-1, 0, 1, 2, 3]
    common = {
        "efficient_sam.format": fmt.FORMAT, "format_version": str(fmt.FORMAT_VERSION), "model": name,
        "family": cfg.family, "decoder_family": cfg.decoder_family, "img_size": str(s), "resize": cfg.resize,
        "dtype": dtype, "hq": str(hq).lower(),
    }
    if cfg.decoder_family == "efficient_sam":
        rules = (f"EfficientSAM decoder: no mask prompt (no mask_input / has_mask_input inputs); at most "
                 f"{cfg.prompt_encoder.max_points} points per prompt (a box = 2 corner points, labels 2/3), padded "
                 f"with (-1, -1) label -1 to exactly {cfg.prompt_encoder.max_points}, more are cut; label 0 adds only "
                 f"the positional encoding; point_coords in the stretched {s}x{s} frame (x * {s} / W, y * {s} / H, "
                 f"padding points at -1); masks bicubic straight to orig_im_size")
    else:
        rules = (f"SAM decoder: point_coords in the resized frame (longest side -> {s}, x and y scaled by "
                 f"{s} / max(H, W)); point prompts without a box need a padding point (0, 0) label -1 appended; "
                 f"mask_input (1 or B, 1, {4 * g}, {4 * g}) logits with has_mask_input 1, else zeros and 0")
    outputs_desc = (
        "masks/iou_predictions/low_res_masks: one mask per prompt (SAM token 0, or the best of tokens 1-3 with "
        "multimask_output=1, plus the HQ token; the HQ token alone with hq_token_only=1)" if hq else
        "masks/iou_predictions/low_res_masks: every mask token (4): token 0 = the single-mask output, tokens 1-3 the "
        "multimask outputs"
    )
    dec_meta = {**common, "role": "decoder", "quantize": "none", "inputs": ",".join(dec_inputs), "rules": rules, "outputs": outputs_desc,
                "mask_input": str(mask_prompt).lower(), "max_points": str(cfg.prompt_encoder.max_points or "none"),
                "point_labels": json.dumps(labels), "mask_threshold": str(cfg.mask_threshold)}
    enc_meta = {**common, "role": "encoder", "quantize": quantize or "none",
                "input": f"images (B, 3, {s}, {s}) float32: RGB resized by the {cfg.resize} policy, normalised with "
                         f"pixel_mean {list(cfg.pixel_mean)} / pixel_std {list(cfg.pixel_std)} (0-255 scale)"
                         + (", zero-padded bottom/right" if cfg.resize != "stretch" else ""),
                "outputs": ",".join(enc_outputs)}

    c_out = 1 if hq else model.mask_decoder.num_mask_tokens
    shapes = {
        "encoder": {"image_embeddings": ("batch", cfg.prompt_encoder.embed_dim, g, g),
                    "interm_embeddings": (1, "batch", g, g, cfg.image_encoder.embed_dim)},
        "decoder": {"masks": ("num_prompts", c_out, "height", "width"), "iou_predictions": ("num_prompts", c_out),
                    "low_res_masks": ("num_prompts", c_out, 4 * g, 4 * g)},
    }
    tmp = Path(tempfile.mkdtemp(prefix="esam-export-", dir=out))
    try:
        images = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0))
        dummy = _dummy_decoder_inputs(model)
        with torch.no_grad():
            _torch_export(enc_graph, (images,), tmp / "encoder.onnx", fmt.ENCODER_INPUTS, enc_outputs, enc_axes, opset)
            _torch_export(dec_graph, tuple(dummy[k] for k in dec_inputs), tmp / "decoder.onnx", dec_inputs,
                          fmt.DECODER_OUTPUTS, _decoder_dynamic_axes(model), opset)
        for part, file, meta in (("encoder", fmt.ENCODER_FILE, enc_meta), ("decoder", fmt.DECODER_FILE, dec_meta)):
            # fp16: converted from the file (shape inference by path also works for graphs over 2 GB)
            proto = _to_fp16(tmp / file) if dtype == "fp16" else onnx.load(str(tmp / file))
            _set_output_shapes(proto, shapes[part])
            _set_metadata(proto, meta)
            dst = out / file
            if quantize and part == "encoder":  # in the scratch folder, then saved like the others
                _save(proto, tmp / "q_in.onnx", ext[part])
                del proto
                _quantize_int8(tmp / "q_in.onnx", tmp / "q_out.onnx", ext[part])
                proto = onnx.load(str(tmp / "q_out.onnx"))
                _set_metadata(proto, meta)
            _save(proto, dst, ext[part])
            del proto
            onnx.checker.check_model(str(dst))
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"export failed: {type(e).__name__}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    num_tokens = 1 if hq else model.mask_decoder.num_mask_tokens
    config = {
        "format": fmt.FORMAT, "format_version": fmt.FORMAT_VERSION, "model": name, "family": cfg.family,
        "decoder_family": cfg.decoder_family, "img_size": s, "resize": cfg.resize,
        "pixel_mean": list(cfg.pixel_mean), "pixel_std": list(cfg.pixel_std), "mask_threshold": cfg.mask_threshold,
        "max_points": cfg.prompt_encoder.max_points, "mask_input": mask_prompt, "hq": hq,
        "hq_early_block": cfg.hq.early_block if hq else None, "embedding_shape": [cfg.prompt_encoder.embed_dim, g, g],
        "low_res_size": 4 * g, "num_mask_tokens": num_tokens,
        "num_multimask_outputs": model.mask_decoder.num_multimask_outputs, "point_labels": labels,
        "opset": opset, "dtype": dtype, "quantize": quantize,
        "quantized_parts": ["encoder"] if quantize else [], "exporter": "torch.onnx (TorchScript, dynamo=False)",
        "torch_version": torch.__version__,
        "encoder": {"file": fmt.ENCODER_FILE, "inputs": list(fmt.ENCODER_INPUTS), "outputs": list(enc_outputs),
                    "external_data": ext["encoder"]},
        "decoder": {"file": fmt.DECODER_FILE, "inputs": list(dec_inputs), "outputs": list(fmt.DECODER_OUTPUTS),
                    "external_data": ext["decoder"], "rules": rules, "outputs_desc": outputs_desc},
        "sam_config": cfg.to_dict(),
    }
    (out / fmt.CONFIG_FILE).write_text(json.dumps(config, indent=2))
    _smoke(out, model, config)
    model.train(was_training)
    return config


def _smoke(out: Path, model: Sam, config: dict) -> None:
    """Run both files once in onnxruntime (batch 1 encoder; 2 prompts of 2 points in the decoder)."""
    s = config["img_size"]
    g = model.config.image_encoder.grid_size
    img = np.random.default_rng(0).standard_normal((1, 3, s, s)).astype(np.float32)
    enc_out = _smoke_run(out / fmt.ENCODER_FILE, {"images": img}, {"image_embeddings": (1, *config["embedding_shape"])})
    feeds = {k: v.numpy() for k, v in _dummy_decoder_inputs(model, b=2, n=2).items()}
    feeds["image_embeddings"] = enc_out["image_embeddings"]
    if model.is_hq:
        feeds["interm_embeddings"] = enc_out["interm_embeddings"]
    c = config["num_mask_tokens"]
    h, w = int(feeds["orig_im_size"][0]), int(feeds["orig_im_size"][1])
    _smoke_run(out / fmt.DECODER_FILE, feeds, {"masks": (2, c, h, w), "iou_predictions": (2, c),
                                               "low_res_masks": (2, c, 4 * g, 4 * g)})
