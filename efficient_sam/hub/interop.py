"""Configs of other libraries <-> ours: transformers `SamModel` / `SamHQModel` config.json and timm `samvit_*`
model arguments. No import of transformers or timm: their config.json files are plain JSON, read and
written here field by field (`TRANSFORMERS_DEFAULTS` are transformers' own defaults, for config.json files
that leave fields out).

What each library can express decides what converts: transformers has SAM's (and HQ-SAM's) architecture
with SAM's processing only (no EfficientSAM), a 3-layer IoU head and, for HQ, the early feature of the
first global-attention block (block 0 when every block is global); timm `samvit` is SAM's image encoder.
Anything else is a `CheckpointError` naming the field.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..config import HQConfig, ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig
from ..errors import CheckpointError, UnsupportedCheckpointError

__all__ = [
    "TRANSFORMERS_DEFAULTS", "TRANSFORMERS_MODEL_TYPES", "is_transformers_config", "transformers_early_block",
    "sam_config_from_transformers", "transformers_config", "transformers_vision_config",
    "encoder_config_from_transformers", "timm_samvit_config",
]

# transformers 5.x SamVisionConfig / SamPromptEncoderConfig / SamMaskDecoderConfig defaults (the SamHQ
# configs have the same ones, plus the HQ decoder's `vit_dim`).
TRANSFORMERS_DEFAULTS: dict[str, dict[str, Any]] = {
    "vision_config": {
        "hidden_size": 768, "output_channels": 256, "num_hidden_layers": 12, "num_attention_heads": 12,
        "num_channels": 3, "image_size": 1024, "patch_size": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
        "attention_dropout": 0.0, "initializer_range": 1e-10, "qkv_bias": True, "mlp_ratio": 4.0,
        "use_abs_pos": True, "use_rel_pos": True, "window_size": 14, "global_attn_indexes": [2, 5, 8, 11],
        "num_pos_feats": 128, "mlp_dim": None,
    },
    "prompt_encoder_config": {
        "hidden_size": 256, "image_size": 1024, "patch_size": 16, "mask_input_channels": 16,
        "num_point_embeddings": 4, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
    },
    "mask_decoder_config": {
        "hidden_size": 256, "hidden_act": "relu", "mlp_dim": 2048, "num_hidden_layers": 2, "num_attention_heads": 8,
        "attention_downsample_rate": 2, "num_multimask_outputs": 3, "iou_head_depth": 3, "iou_head_hidden_dim": 256,
        "layer_norm_eps": 1e-6,
    },
}
# model_type -> (architecture class, sub-config model_types)
TRANSFORMERS_MODEL_TYPES = {
    "sam": ("SamModel", ("sam_vision_model", "sam_prompt_encoder", "sam_mask_decoder")),
    "sam_hq": ("SamHQModel", ("sam_hq_vision_model", "sam_hq_prompt_encoder", "sam_hq_mask_decoder")),
}
# Our two-way transformer's LayerNorms (norm1..4) use PyTorch's default eps, as the official SAM; transformers
# takes theirs from mask_decoder_config.layer_norm_eps (written as this value, so the outputs agree).
TWO_WAY_LAYER_NORM_EPS = 1e-5


def is_transformers_config(config: Mapping | None) -> bool:
    """A transformers `SamModel` / `SamHQModel` config.json (model_type 'sam' / 'sam_hq')."""
    return isinstance(config, Mapping) and config.get("model_type") in TRANSFORMERS_MODEL_TYPES


def transformers_early_block(enc: ImageEncoderConfig) -> int | None:
    """The block whose output transformers' SamHQModel fuses: the first block without windows (the first
    global-attention block; block 0 when every block is global); None: no such block (no fusion)."""
    if enc.window_size == 0:
        return 0
    return min(enc.global_attn_indexes) if enc.global_attn_indexes else None


def _square(value: Any, what: str, label: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise UnsupportedCheckpointError(f"{label}: {what} {list(value)} is not square; only square inputs are supported")
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool):
        raise CheckpointError(f"{label}: {what} must be an int, got {value!r}")
    return value


def sam_config_from_transformers(config: Mapping, label: str = "config.json") -> SamConfig:
    """Our SamConfig (with `hq` for 'sam_hq') of a transformers `SamModel` / `SamHQModel` config.json;
    CheckpointError naming the field for what our model cannot compute the same way."""
    model_type = config.get("model_type")
    if model_type not in TRANSFORMERS_MODEL_TYPES:
        raise CheckpointError(f"{label}: not a transformers SamModel / SamHQModel config (model_type {model_type!r})")
    sub = {}
    for name, defaults in TRANSFORMERS_DEFAULTS.items():
        given = config.get(name) or {}
        if not isinstance(given, Mapping):
            raise CheckpointError(f"{label}: {name} must be an object, got {type(given).__name__}")
        sub[name] = {**defaults, **given}
    v, p, d = sub["vision_config"], sub["prompt_encoder_config"], sub["mask_decoder_config"]
    problems = []

    def require(ok: bool, field: str, value: Any, rule: str) -> None:
        if not ok:
            problems.append(f"{field} = {value!r} ({rule})")

    require(v["hidden_act"] == "gelu", "vision_config.hidden_act", v["hidden_act"], "SAM's encoder MLP is GELU")
    require(bool(v["use_abs_pos"]), "vision_config.use_abs_pos", v["use_abs_pos"], "SAM's encoder has a position embedding")
    require(p["hidden_act"] == "gelu", "prompt_encoder_config.hidden_act", p["hidden_act"], "SAM's mask downscaling is GELU")
    require(p["num_point_embeddings"] == 4, "prompt_encoder_config.num_point_embeddings", p["num_point_embeddings"],
            "SAM has 4: negative, positive, box corners")
    require(abs(p["layer_norm_eps"] - 1e-6) < 1e-12, "prompt_encoder_config.layer_norm_eps", p["layer_norm_eps"],
            "SAM's mask downscaling LayerNorm2d has eps 1e-6")
    require(d["hidden_act"] == "relu", "mask_decoder_config.hidden_act", d["hidden_act"],
            "transformers' hypernetwork MLPs and IoU head are ReLU")
    require(d["iou_head_depth"] == 3, "mask_decoder_config.iou_head_depth", d["iou_head_depth"], "SAM's IoU head has 3 layers")
    img = _square(v["image_size"], "vision_config.image_size", label)
    patch = _square(v["patch_size"], "vision_config.patch_size", label)
    require(_square(p["image_size"], "prompt_encoder_config.image_size", label) == img, "prompt_encoder_config.image_size",
            p["image_size"], f"must equal vision_config.image_size {img}")
    require(_square(p["patch_size"], "prompt_encoder_config.patch_size", label) == patch, "prompt_encoder_config.patch_size",
            p["patch_size"], f"must equal vision_config.patch_size {patch}")
    width = v["hidden_size"]
    mlp_dim = v["mlp_dim"] if v["mlp_dim"] is not None else int(width * v["mlp_ratio"])
    mlp_ratio = mlp_dim / width
    require(int(width * mlp_ratio) == mlp_dim, "vision_config.mlp_dim", mlp_dim, f"not a multiple of the width {width}")
    require(2 * v["num_pos_feats"] == p["hidden_size"], "vision_config.num_pos_feats", v["num_pos_feats"],
            f"must be half of prompt_encoder_config.hidden_size {p['hidden_size']}")
    if model_type == "sam_hq":
        vit_dim = d.get("vit_dim", 768)
        require(vit_dim == width, "mask_decoder_config.vit_dim", vit_dim, f"must equal vision_config.hidden_size {width}")
    if problems:
        raise UnsupportedCheckpointError(
            f"{label}: this transformers {TRANSFORMERS_MODEL_TYPES[model_type][0]} config describes a model that "
            f"efficient_sam does not build: " + "; ".join(problems)
        )
    enc = ImageEncoderConfig(
        img_size=img, patch_size=patch, in_chans=v["num_channels"], embed_dim=width, depth=v["num_hidden_layers"],
        num_heads=v["num_attention_heads"], mlp_ratio=float(mlp_ratio), out_chans=v["output_channels"],
        qkv_bias=bool(v["qkv_bias"]), norm_eps=float(v["layer_norm_eps"]), window_size=v["window_size"],
        global_attn_indexes=tuple(v["global_attn_indexes"]), use_rel_pos=bool(v["use_rel_pos"]), pos_embed="grid",
    )
    cfg = SamConfig(
        family="sam", image_encoder=enc,
        prompt_encoder=PromptEncoderConfig(embed_dim=p["hidden_size"], mask_in_chans=p["mask_input_channels"]),
        mask_decoder=MaskDecoderConfig(
            transformer_dim=d["hidden_size"], transformer_depth=d["num_hidden_layers"], transformer_mlp_dim=d["mlp_dim"],
            transformer_num_heads=d["num_attention_heads"], attention_downsample_rate=d["attention_downsample_rate"],
            num_multimask_outputs=d["num_multimask_outputs"], iou_head_depth=d["iou_head_depth"],
            iou_head_hidden_dim=d["iou_head_hidden_dim"],
        ),
    )
    if model_type == "sam_hq":
        early = transformers_early_block(enc)
        if early is None:
            raise UnsupportedCheckpointError(
                f"{label}: a SamHQModel whose encoder has windows in every block (global_attn_indexes empty) fuses "
                "no early feature; efficient_sam's HQ models always do"
            )
        cfg.hq = HQConfig(early)
    try:
        return cfg.validate()
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{label}: this transformers config does not describe a valid model ({e})") from e


def transformers_config(cfg: SamConfig) -> dict[str, Any]:
    """The transformers config.json (`SamModel`, or `SamHQModel` for an HQ model) of our `cfg`;
    CheckpointError listing what transformers cannot express."""
    enc, pe, md = cfg.image_encoder, cfg.prompt_encoder, cfg.mask_decoder
    if cfg.family != "sam" or cfg.decoder_family != "sam":
        raise CheckpointError(
            f"transformers has no EfficientSAM model (this is a {cfg.family} model with the {cfg.decoder_family} "
            "decoder); convert it --to ours or --to official instead"
        )
    problems = []
    checks = [
        (cfg.resize == "longest_side", "resize", cfg.resize, "transformers' SamProcessor resizes the longest side"),
        (enc.pos_embed == "grid", "image_encoder.pos_embed", enc.pos_embed, "transformers has SAM's (1, h, w, C) grid"),
        (md.activation == "relu", "mask_decoder.activation", md.activation, "transformers' decoder MLPs are ReLU"),
        (md.upscaling_norm == "layernorm2d", "mask_decoder.upscaling_norm", md.upscaling_norm, "transformers: LayerNorm2d"),
        (md.iou_head_depth == 3, "mask_decoder.iou_head_depth", md.iou_head_depth, "the key renaming assumes 3 layers"),
        (pe.negative_point_embed and pe.mask_prompt and pe.zero_padding_pe and pe.max_points is None,
         "prompt_encoder", pe, "transformers has SAM's prompt encoder"),
        (int(enc.embed_dim * enc.mlp_ratio) == enc.embed_dim * enc.mlp_ratio, "image_encoder.mlp_ratio", enc.mlp_ratio,
         "the encoder MLP width must be an integer"),
    ]
    if cfg.hq is not None:
        early = transformers_early_block(enc)
        checks.append((early == cfg.hq.early_block, "hq.early_block", cfg.hq.early_block,
                       f"transformers' SamHQModel fuses block {early} (the first global-attention block)"))
    for ok, field, value, rule in checks:
        if not ok:
            problems.append(f"{field} = {value!r} ({rule})")
    if problems:
        raise CheckpointError("transformers cannot express this model: " + "; ".join(problems))
    model_type = "sam_hq" if cfg.hq is not None else "sam"
    arch, (vision_type, prompt_type, decoder_type) = TRANSFORMERS_MODEL_TYPES[model_type]
    vision = {**_vision_config(enc), "model_type": vision_type, "num_pos_feats": pe.embed_dim // 2}
    prompt = {
        **TRANSFORMERS_DEFAULTS["prompt_encoder_config"], "model_type": prompt_type, "hidden_size": pe.embed_dim,
        "image_size": enc.img_size, "patch_size": enc.patch_size, "mask_input_channels": pe.mask_in_chans,
        "image_embedding_size": enc.grid_size,
    }
    decoder = {
        **TRANSFORMERS_DEFAULTS["mask_decoder_config"], "model_type": decoder_type, "hidden_size": md.transformer_dim,
        "mlp_dim": md.transformer_mlp_dim, "num_hidden_layers": md.transformer_depth,
        "num_attention_heads": md.transformer_num_heads, "attention_downsample_rate": md.attention_downsample_rate,
        "num_multimask_outputs": md.num_multimask_outputs, "iou_head_depth": md.iou_head_depth,
        "iou_head_hidden_dim": md.iou_head_hidden_dim, "layer_norm_eps": TWO_WAY_LAYER_NORM_EPS,
    }
    if cfg.hq is not None:
        decoder["vit_dim"] = enc.embed_dim
    return {
        "architectures": [arch], "model_type": model_type, "initializer_range": 0.02, "tie_word_embeddings": True,
        "dtype": "float32", "vision_config": vision, "prompt_encoder_config": prompt, "mask_decoder_config": decoder,
    }


def _vision_config(enc: ImageEncoderConfig) -> dict[str, Any]:
    return {
        **TRANSFORMERS_DEFAULTS["vision_config"],
        "hidden_size": enc.embed_dim, "output_channels": enc.out_chans, "num_hidden_layers": enc.depth,
        "num_attention_heads": enc.num_heads, "num_channels": enc.in_chans, "image_size": enc.img_size,
        "patch_size": enc.patch_size, "layer_norm_eps": enc.norm_eps, "qkv_bias": enc.qkv_bias,
        "mlp_ratio": enc.mlp_ratio, "use_rel_pos": enc.use_rel_pos, "window_size": enc.window_size,
        "global_attn_indexes": list(enc.global_attn_indexes), "mlp_dim": int(enc.embed_dim * enc.mlp_ratio),
        "scale": enc.embed_dim // 2,
    }


def transformers_vision_config(enc: ImageEncoderConfig) -> dict[str, Any]:
    """The transformers `SamVisionModel` config.json of our image encoder (SAM's: grid position embedding)."""
    if enc.pos_embed != "grid" or int(enc.embed_dim * enc.mlp_ratio) != enc.embed_dim * enc.mlp_ratio:
        raise CheckpointError(
            f"transformers' SamVisionModel cannot express this image encoder (pos_embed {enc.pos_embed!r}, "
            f"mlp_ratio {enc.mlp_ratio}): it is SAM's encoder, with a (1, h, w, C) position-embedding grid; "
            "EfficientSAM's encoder has no transformers class"
        )
    return {"architectures": ["SamVisionModel"], "model_type": "sam_vision_model", "dtype": "float32",
            **_vision_config(enc)}


def encoder_config_from_transformers(config: Mapping, label: str = "config.json") -> ImageEncoderConfig:
    """Our ImageEncoderConfig of a transformers `SamVisionModel` config.json (model_type 'sam_vision_model')."""
    whole = {"model_type": "sam", "vision_config": config,
             "prompt_encoder_config": {"image_size": config.get("image_size", 1024),
                                       "patch_size": config.get("patch_size", 16),
                                       "hidden_size": 2 * config.get("num_pos_feats", 128)}}
    return sam_config_from_transformers(whole, label).image_encoder


_TIMM_SIZES = {768: "samvit_base_patch16", 1024: "samvit_large_patch16", 1280: "samvit_huge_patch16"}


def timm_samvit_config(enc: ImageEncoderConfig) -> dict[str, Any]:
    """timm's config.json (`architecture`, `model_args`, `pretrained_cfg`) of a SAM image encoder as a
    `samvit_*` model: `timm.create_model(cfg["architecture"], num_classes=0, **cfg["model_args"])` builds
    it (and `timm.create_model("local-dir:FOLDER", pretrained=True)` loads a folder with it)."""
    problems = [
        f"{field} = {value!r} ({rule})"
        for ok, field, value, rule in [
            (enc.pos_embed == "grid", "pos_embed", enc.pos_embed,
             "timm samvit has SAM's (1, h, w, C) grid; EfficientSAM's encoder resizes a cls-slot grid"),
            (int(enc.embed_dim * enc.mlp_ratio) == enc.embed_dim * enc.mlp_ratio, "mlp_ratio", enc.mlp_ratio,
             "the MLP width must be an integer"),
        ]
        if not ok
    ]
    if problems:
        raise CheckpointError("timm samvit cannot express this image encoder: " + "; ".join(problems))
    model_args = {
        "img_size": enc.img_size, "patch_size": enc.patch_size, "in_chans": enc.in_chans, "embed_dim": enc.embed_dim,
        "depth": enc.depth, "num_heads": enc.num_heads, "mlp_ratio": enc.mlp_ratio, "qkv_bias": enc.qkv_bias,
        "window_size": enc.window_size, "global_attn_indexes": list(enc.global_attn_indexes),
        "use_rel_pos": enc.use_rel_pos, "neck_chans": enc.out_chans,
    }
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # SAM's pixel mean/std on the [0, 1] scale
    return {
        "architecture": _TIMM_SIZES.get(enc.embed_dim, "samvit_base_patch16"),
        "num_classes": 0,
        "num_features": enc.out_chans,
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "efficient_sam", "custom_load": False, "input_size": [enc.in_chans, enc.img_size, enc.img_size],
            "fixed_input_size": True, "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
            "mean": list(mean), "std": list(std), "num_classes": 0, "pool_size": None,
            "first_conv": "patch_embed.proj", "classifier": "head.fc",
        },
    }
