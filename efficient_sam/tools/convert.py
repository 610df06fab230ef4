"""esam-convert: any supported checkpoint -> our format (config.json + model.safetensors + README.md).

    esam-convert SRC OUT_DIR [--model NAME] [--revision REV] [--set KEY=VALUE ...] [--overwrite]

SRC is a local file, a local directory or a Hub repo id, optionally with the file in the repo:
`yunyangx/EfficientSAM:efficient_sam_vitt.pt`, `ybelkada/segment-anything:checkpoints/sam_vit_b_01ec64.pth`,
`facebook/sam-vit-base`, `timm/samvit_base_patch16.sa1b`. The output loads with
`efficient_sam.from_pretrained(OUT_DIR)`; it is read back and compared with the converted weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open

from ..checkpoint import CheckpointError
from ..config import check_overrides, parse_override
from ..hub import load_with_info
from ..registry import list_models

OUTPUT_FILES = ("config.json", "model.safetensors", "README.md")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="esam-convert",
        description="Convert a SAM / EfficientSAM / transformers SamModel / timm samvit checkpoint (local file, "
        "directory or Hub repo_id[:filename]) to the efficient_sam format: config.json + model.safetensors "
        "+ a model card README.md.",
    )
    p.add_argument("src", help="local file, local directory, or Hub repo id with optional :filename")
    p.add_argument("out_dir", type=Path, help="output directory")
    p.add_argument("--model", choices=list_models(), help="architecture to build (default: inferred from the file)")
    p.add_argument("--filename", help="file inside the repo/directory (same as SRC=repo_id:filename)")
    p.add_argument("--revision", help="Hub branch, tag or commit (default main)")
    p.add_argument(
        "--set", dest="overrides", action="append", type=parse_override, default=[], metavar="KEY=VALUE",
        help="config override, e.g. --set encoder_depth=2 --set 'encoder_global_attn_indexes=(1,)'",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing conversion in OUT_DIR")
    p.add_argument("--no-verify", action="store_true", help="skip reading the output back")
    return p


def verify_output(net: torch.nn.Module, out_dir: Path) -> None:
    """The saved files hold exactly the model's tensors and config (tensors compared one by one, lazily)."""
    expected = net.state_dict()
    with safe_open(str(out_dir / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        if keys != set(expected):
            raise CheckpointError(f"verification failed: saved keys differ ({sorted(keys ^ set(expected))[:5]})")
        for k in keys:
            if not torch.equal(f.get_tensor(k), expected[k].detach().cpu()):
                raise CheckpointError(f"verification failed: tensor {k} differs after saving")
    saved = json.loads((out_dir / "config.json").read_text())
    cfg = getattr(net, "config", None) or getattr(net, "cfg", None)
    if cfg is not None:
        if json.loads(json.dumps(dataclasses.asdict(cfg))) != saved:
            raise CheckpointError("verification failed: config.json differs from the model's config")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    out: Path = args.out_dir
    if out.exists() and not out.is_dir():
        print(f"esam-convert: error: {out} exists and is not a directory", file=sys.stderr)
        return 2
    existing = [n for n in OUTPUT_FILES if (out / n).exists()]
    if existing and not args.overwrite:
        print(
            f"esam-convert: error: {out} already holds {', '.join(existing)}; pass --overwrite to replace them",
            file=sys.stderr,
        )
        return 2
    try:
        check_overrides(**dict(args.overrides))  # --set encoder_depth=two: an error before any download
        net, info = load_with_info(
            args.src, filename=args.filename, revision=args.revision, model=args.model, **dict(args.overrides)
        )
        if not hasattr(net, "save_pretrained"):
            raise CheckpointError(f"{type(net).__name__} has no save_pretrained; cannot convert it")
        for n in existing:
            (out / n).unlink()
        net.save_pretrained(
            out, model_card_kwargs={"source": info["source"], "source_format": info["format"]}
        )
        if not args.no_verify:
            verify_output(net, out)
    except (CheckpointError, ValueError, TypeError, OSError) as e:
        print(f"esam-convert: error: {e}", file=sys.stderr)
        return 1
    n_params = sum(p.numel() for p in net.parameters())
    print(
        f"converted {info['source']} ({info['format']} format) -> {out}\n"
        f"  model: {type(net).__name__}, architecture {info['architecture']}, {n_params:,} parameters\n"
        f"  files: {', '.join(n for n in OUTPUT_FILES if (out / n).exists())}\n"
        f"  load with: efficient_sam.from_pretrained({str(out)!r})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
