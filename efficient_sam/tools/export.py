"""esam-export: a model -> ONNX (encoder.onnx + decoder.onnx + config.json), checked and smoke-run.

    esam-export --model NAME_OR_PATH [--checkpoint F] [--hq] --out DIR [--opset 17] [--dtype fp32|fp16]
        [--quantize int8] [--set KEY=VALUE ...] [--external-data] [--overwrite]

NAME_OR_PATH is a registered model (`sam_vit_b`, `efficient_sam_vitt`, ...; `--checkpoint` gives its
weights, `--hq` makes it an HQ-SAM model, e.g. with an official `sam_hq_vit_b.pth`) or anything
`efficient_sam.from_pretrained` reads (a folder, a file, a Hub repo id). Run the export with
`efficient_sam.onnx.OnnxSamPredictor(DIR)` (numpy + pillow + onnxruntime only).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from ..checkpoint import CheckpointError
from ..config import check_overrides, parse_override
from ..registry import list_models

PROG = "esam-export"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help=f"registered model ({', '.join(list_models())}) or a from_pretrained source")
    p.add_argument("--checkpoint", help="weights for a registered --model (official .pth/.pt or .safetensors)")
    p.add_argument("--hq", action="store_true", help="an HQ-SAM model on the registered --model")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="weights / compute precision")
    p.add_argument("--quantize", choices=("int8",), default=None, help="dynamic int8 quantization (onnxruntime)")
    p.add_argument(
        "--set", dest="overrides", action="append", type=parse_override, default=[], metavar="KEY=VALUE",
        help="config override, e.g. --set encoder_depth=2 --set 'encoder_global_attn_indexes=(1,)'",
    )
    p.add_argument("--external-data", action="store_true",
                   help="store the weights as ONNX external data (automatic for graphs over 1.8 GB)")
    p.add_argument("--overwrite", action="store_true", help="replace an export in a non-empty --out")
    return p


def _error(msg: str, code: int = 2) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return code


def _load(args):
    import efficient_sam as es

    overrides = dict(args.overrides)
    if args.model in list_models():
        if args.checkpoint is None:
            print(f"{PROG}: warning: no --checkpoint: {args.model} is exported with random weights", file=sys.stderr)
        if args.hq:
            return es.build_hq_model(args.model, checkpoint=args.checkpoint, **overrides)
        return es.build_model(args.model, checkpoint=args.checkpoint, **overrides)
    net = es.from_pretrained(args.model, **overrides)
    if not isinstance(net, es.Sam):
        raise CheckpointError(f"{args.model} holds a {type(net).__name__}, not a whole model (encoder + decoder)")
    return net


def main(argv: Sequence[str] | None = None) -> int:
    """Bad arguments exit 2 with one line `esam-export: error: ...`; a failed load or export exits 1."""
    args = build_parser().parse_args(argv)
    from ..onnx.export import DEFAULT_OPSET, ExportError, check_opset

    try:
        opset = check_opset(DEFAULT_OPSET if args.opset is None else args.opset)
    except ExportError as e:
        return _error(f"--opset: {e}")
    registered = args.model in list_models()
    if not registered:
        if args.checkpoint is not None or args.hq:
            return _error(f"--checkpoint / --hq apply to a registered --model ({', '.join(list_models())})")
        looks_like_repo = args.model.count("/") == 1 and not args.model.startswith((".", "/"))
        if not os.path.exists(args.model) and not looks_like_repo:
            return _error(
                f"--model: unknown model {args.model!r}; one of {', '.join(list_models())}, a local folder / file, "
                f"or a Hub repo id"
            )
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        return _error(f"--checkpoint: {args.checkpoint!r} is not a file")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        return _error(f"--out: {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        return _error(f"--out: {out} already exists and is not empty; pass --overwrite to replace its export")
    if args.quantize and args.dtype != "fp32":
        return _error("--quantize int8 applies to --dtype fp32")
    try:
        check_overrides(**dict(args.overrides))
    except TypeError as e:
        return _error(f"--set: {e}")
    from ..onnx.export import export_model

    try:
        model = _load(args)
        config = export_model(model, out, opset=opset, dtype=args.dtype, quantize=args.quantize,
                              overwrite=args.overwrite, external_data=True if args.external_data else None)
    except (CheckpointError, ExportError, ValueError, TypeError, KeyError, OSError) as e:
        return _error(str(e).strip("'\""), 1)
    files = sorted(p for p in out.iterdir() if p.is_file())
    sizes = ", ".join(f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in files)
    print(
        f"exported {config['model']} ({config['family']}{', HQ' if config['hq'] else ''}, {config['img_size']} px, "
        f"opset {config['opset']}, {config['dtype']}{', int8' if config['quantize'] else ''}) -> {out}\n"
        f"  files: {sizes}\n"
        f"  checked with onnx.checker and run in onnxruntime\n"
        f"  use: efficient_sam.onnx.OnnxSamPredictor({str(out)!r})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
