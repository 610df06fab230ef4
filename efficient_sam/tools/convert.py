"""esam-convert: any supported checkpoint -> our format, an official layout, transformers or timm.

    esam-convert SRC OUT [--to ours|official|transformers|timm] [--model NAME] [--revision REV]
                 [--set KEY=VALUE ...] [--overwrite] [--no-verify]

SRC is a local file, a local directory or a Hub repo id, optionally with the file in the repo:
`yunyangx/EfficientSAM:efficient_sam_vitt.pt`, `ybelkada/segment-anything:checkpoints/sam_vit_b_01ec64.pth`,
`facebook/sam-vit-base`, `syscv-community/sam-hq-vit-base`, `timm/samvit_base_patch16.sa1b`.

--to (what OUT becomes):
- `ours` (default): a folder with config.json + model.safetensors + README.md, for `efficient_sam.from_pretrained(OUT)`.
- `official`: the family's official checkpoint file: SAM `.pth` (`segment_anything`), EfficientSAM `.pt`
  (`{"model": state_dict}`), HQ-SAM `.pth` (`segment_anything_hq`). OUT is the file (`*.pth` / `*.pt`) or a
  folder that gets the official file name (`sam_vit_b.pth`, `efficient_sam_vitt.pt`, `sam_hq_vit_b.pth`).
- `transformers`: a folder with config.json + model.safetensors for transformers' `SamModel` / `SamHQModel`
  (`SamVisionModel` for an image encoder alone) `.from_pretrained(OUT)`.
- `timm`: a SAM image encoder as timm `samvit_*`: a folder with model.safetensors + timm's config.json
  (`timm.create_model("local-dir:OUT", pretrained=True)`), or a `*.safetensors` / `*.pth` file.

What a target cannot express is an error naming the field (EfficientSAM has no transformers or timm class;
HQ on EfficientSAM has no official file). Every output is read back and compared with the model's tensors
(and for transformers, its config.json parsed back into our config) unless --no-verify.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..checkpoint import (
    CheckpointError,
    from_efficient_sam_layout,
    from_timm_samvit_layout,
    from_transformers_layout,
    read_state_dict,
    to_efficient_sam_layout,
    to_timm_samvit_layout,
    to_transformers_layout,
)
from ..config import SamConfig, check_overrides, parse_override
from ..hub import load_with_info
from ..hub.interop import (
    sam_config_from_transformers,
    timm_samvit_config,
    transformers_config,
    transformers_vision_config,
)
from ..modeling.image_encoder import ImageEncoderViT
from ..modeling.sam import Sam
from ..registry import config_name, list_models

OUTPUT_FILES = ("config.json", "model.safetensors", "README.md")
TARGETS = ("ours", "official", "transformers", "timm")
OFFICIAL_SUFFIXES = (".pth", ".pt")
TIMM_SUFFIXES = (".safetensors", ".pth", ".bin")
_PROMPT_PE = "prompt_encoder.shared_embedding.positional_embedding"  # tied copy transformers does not save


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="esam-convert",
        description="Convert a SAM / EfficientSAM / HQ-SAM / transformers SamModel or SamHQModel / timm samvit "
        "checkpoint (local file, directory or Hub repo_id[:filename]) to the efficient_sam format (config.json + "
        "model.safetensors + README.md), the family's official layout, a transformers folder or timm samvit.",
    )
    p.add_argument("src", help="local file, local directory, or Hub repo id with optional :filename")
    p.add_argument("out_dir", type=Path, metavar="out",
                   help="output directory (--to official / timm: also a file, e.g. sam_vit_b.pth)")
    p.add_argument(
        "--to", choices=TARGETS, default="ours",
        help="output format: ours (default; efficient_sam folder), official (SAM .pth / EfficientSAM .pt / "
        "HQ-SAM .pth), transformers (SamModel / SamHQModel folder), timm (samvit image encoder)",
    )
    p.add_argument("--model", choices=list_models(), help="architecture to build (default: inferred from the file)")
    p.add_argument("--filename", help="file inside the repo/directory (same as SRC=repo_id:filename)")
    p.add_argument("--revision", help="Hub branch, tag or commit (default main)")
    p.add_argument(
        "--set", dest="overrides", action="append", type=parse_override, default=[], metavar="KEY=VALUE",
        help="config override, e.g. --set encoder_depth=2 --set 'encoder_global_attn_indexes=(1,)'",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing conversion in OUT")
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


def _tensors(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def _same_tensors(written: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    if set(written) != set(expected):
        raise CheckpointError(f"verification failed: {what} keys differ ({sorted(set(written) ^ set(expected))[:5]})")
    for k, v in expected.items():
        if not torch.equal(written[k], v.detach().cpu()):
            raise CheckpointError(f"verification failed: tensor {k} differs after writing {what}")


# ---- what each target writes: (files it writes, writer) ----------------------------------------------------


@dataclasses.dataclass
class Plan:
    files: list[Path]  # every file the conversion writes (checked for --overwrite)
    write: Callable[[], None]
    verify: Callable[[], None]
    kind: str  # for the summary
    load_hint: str


def _official_plan(net: torch.nn.Module, out: Path) -> Plan:
    if not isinstance(net, Sam):
        raise CheckpointError(
            "an image encoder alone has no official SAM / EfficientSAM checkpoint; use --to timm (SAM encoders), "
            "--to transformers or --to ours"
        )
    cfg: SamConfig = net.config
    base = config_name(dataclasses.replace(cfg, hq=None))
    sd = _tensors(net.state_dict())
    if cfg.family == "sam" and cfg.decoder_family == "sam":
        stem = (base or "sam_custom") if cfg.hq is None else "sam_hq_" + (base or "sam_custom").removeprefix("sam_")
        file = out if out.suffix in OFFICIAL_SUFFIXES else out / f"{stem}.pth"
        package = "segment_anything" if cfg.hq is None else "segment_anything_hq"
        kind = f"official {package} layout" + (" (HQ-SAM)" if cfg.hq is not None else "")
        key = (base or "vit_b").removeprefix("sam_")
        hint = (f"{package}.sam_model_registry[{key!r}](checkpoint={str(file)!r})" if base else
                f"{package}.build_sam._build_sam(...) with this custom encoder; or efficient_sam.from_pretrained"
                f"({str(file)!r}, model=..., <overrides>)")

        def write() -> None:
            file.parent.mkdir(parents=True, exist_ok=True)
            torch.save(sd, file)

        def verify() -> None:
            _same_tensors(read_state_dict(file), sd, str(file))

    elif cfg.family == "efficient_sam" and cfg.decoder_family == "efficient_sam" and cfg.hq is None:
        file = out if out.suffix in OFFICIAL_SUFFIXES else out / f"{base or 'efficient_sam_custom'}.pt"
        official = to_efficient_sam_layout(sd)
        kind = "official EfficientSAM layout ({'model': state_dict})"
        hint = (f"EfficientSAM's build_efficient_sam(...) + load_state_dict(torch.load({str(file)!r})['model']); "
                f"or efficient_sam.from_pretrained({str(file)!r})")

        def write() -> None:
            file.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": official}, file)

        def verify() -> None:
            _same_tensors(from_efficient_sam_layout(read_state_dict(file)), sd, str(file))

    else:
        what = ("an HQ model on EfficientSAM" if cfg.hq is not None and cfg.family == "efficient_sam"
                else f"a {cfg.family} model with the {cfg.decoder_family} decoder")
        raise CheckpointError(
            f"{what} has no official checkpoint layout (official HQ-SAM exists for SAM ViT-B/L/H only; "
            "official EfficientSAM has no HQ decoder); convert it --to ours"
        )
    return Plan([file], write, verify, kind, hint)


def _transformers_plan(net: torch.nn.Module, out: Path) -> Plan:
    if isinstance(net, ImageEncoderViT):
        config = transformers_vision_config(net.cfg)
        sd = _tensors({f"image_encoder.{k}": v for k, v in net.state_dict().items()})
        theirs = to_transformers_layout(sd)
        arch = "SamVisionModel"
    else:
        config = transformers_config(net.config)  # CheckpointError for what transformers cannot express
        sd = _tensors(net.state_dict())
        theirs = to_transformers_layout(sd)
        theirs.pop(_PROMPT_PE, None)  # tied to shared_image_embedding: transformers saves that one only
        arch = config["architectures"][0]
    files = [out / "config.json", out / "model.safetensors"]

    def write() -> None:
        out.mkdir(parents=True, exist_ok=True)
        save_file(theirs, str(files[1]), metadata={"format": "pt"})
        files[0].write_text(json.dumps(config, indent=2) + "\n")

    def verify() -> None:
        back = from_transformers_layout(read_state_dict(files[1]))
        _same_tensors(back, sd, str(files[1]))
        if isinstance(net, Sam):
            parsed = sam_config_from_transformers(json.loads(files[0].read_text()), str(files[0]))
            if parsed.to_dict() != net.config.to_dict():
                raise CheckpointError("verification failed: config.json does not describe the model's config")

    return Plan(files, write, verify, f"transformers {arch}",
                f"transformers.{arch}.from_pretrained({str(out)!r}); or efficient_sam.from_pretrained({str(out)!r})")


def _timm_plan(net: torch.nn.Module, out: Path) -> Plan:
    if isinstance(net, Sam):
        if net.config.family != "sam":
            raise CheckpointError(
                "timm samvit is SAM's image encoder; EfficientSAM's encoder (a resized cls-slot position "
                "embedding, no windows) is not a samvit model: convert it --to ours or --to official"
            )
        enc, enc_sd = net.config.image_encoder, net.image_encoder.state_dict()
    else:
        enc, enc_sd = net.cfg, net.state_dict()
    config = timm_samvit_config(enc)  # CheckpointError for what samvit cannot express
    enc_sd = _tensors(enc_sd)
    theirs = to_timm_samvit_layout(enc_sd)
    if out.suffix in TIMM_SUFFIXES:
        weights, files = out, [out]
    else:
        weights = out / "model.safetensors"
        files = [out / "config.json", weights]

    def write() -> None:
        weights.parent.mkdir(parents=True, exist_ok=True)
        if weights.suffix == ".safetensors":
            save_file(theirs, str(weights), metadata={"format": "pt"})
        else:
            torch.save(theirs, weights)
        if len(files) == 2:
            files[0].write_text(json.dumps(config, indent=2) + "\n")

    def verify() -> None:
        _same_tensors(from_timm_samvit_layout(read_state_dict(weights)), enc_sd, str(weights))

    args = ", ".join(f"{k}={v!r}" for k, v in config["model_args"].items())
    hint = (f"timm.create_model('local-dir:{out}', pretrained=True)" if len(files) == 2 else
            f"timm.create_model({config['architecture']!r}, num_classes=0, {args}).load_state_dict(...)")
    return Plan(files, write, verify, f"timm {config['architecture']}", hint)


def _check_existing(paths: Sequence[Path], overwrite: bool) -> str | None:
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        return f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}; pass --overwrite to replace"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    out: Path = args.out_dir
    to_file = (args.to == "official" and out.suffix in OFFICIAL_SUFFIXES) or (args.to == "timm" and out.suffix in TIMM_SUFFIXES)
    if to_file and out.is_dir():
        print(f"esam-convert: error: {out} is a directory; give a file name ending in {out.suffix}", file=sys.stderr)
        return 2
    if not to_file and out.exists() and not out.is_dir():
        print(f"esam-convert: error: {out} exists and is not a directory", file=sys.stderr)
        return 2
    known = {"ours": [out / n for n in OUTPUT_FILES], "transformers": [out / "config.json", out / "model.safetensors"],
             "timm": [out] if to_file else [out / "config.json", out / "model.safetensors"],
             "official": [out] if to_file else []}[args.to]
    if (msg := _check_existing(known, args.overwrite)) is not None:  # before any download
        print(f"esam-convert: error: {msg}", file=sys.stderr)
        return 2
    try:
        check_overrides(**dict(args.overrides))  # --set encoder_depth=two: an error before any download
        net, info = load_with_info(
            args.src, filename=args.filename, revision=args.revision, model=args.model, **dict(args.overrides)
        )
        if args.to == "ours":
            if not hasattr(net, "save_pretrained"):
                raise CheckpointError(f"{type(net).__name__} has no save_pretrained; cannot convert it")
            for p in known:
                if p.exists():
                    p.unlink()
            net.save_pretrained(out, model_card_kwargs={"source": info["source"], "source_format": info["format"]})
            if not args.no_verify:
                verify_output(net, out)
            written, kind, hint = [p for p in known if p.exists()], "efficient_sam format", f"efficient_sam.from_pretrained({str(out)!r})"
        else:
            plan = {"official": _official_plan, "transformers": _transformers_plan, "timm": _timm_plan}[args.to](net, out)
            if (msg := _check_existing(plan.files, args.overwrite)) is not None:
                print(f"esam-convert: error: {msg}", file=sys.stderr)
                return 2
            plan.write()
            if not args.no_verify:
                plan.verify()
            written, kind, hint = plan.files, plan.kind, plan.load_hint
    except (CheckpointError, ValueError, TypeError, OSError) as e:
        print(f"esam-convert: error: {e}", file=sys.stderr)
        return 1
    n_params = sum(p.numel() for p in net.parameters())
    print(
        f"converted {info['source']} ({info['format']} format) -> {out} ({kind})\n"
        f"  model: {type(net).__name__}, architecture {info['architecture']}, {n_params:,} parameters\n"
        f"  files: {', '.join(p.name for p in written)}\n"
        f"  load with: {hint}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
