"""GMAC counting: FlopCounterMode on meta == analytic formula, fvcore (with an SDPA handle) within 1%,
full-size encoders == the reference tables (`REFERENCE` below); and an `esam-bench` smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import efficient_sam as es
from benchmarks import bench
from benchmarks import flops as F_

# Small configs covering: SAM windows with zero padding (16 -> 28, 20 -> 24), global blocks, rel-pos,
# EfficientSAM's all-global encoder with a resized 197-slot pos-embed, other MLP ratios and decoder depths.
SMALL = [
    ("sam_vit_b", dict(encoder_img_size=256, encoder_depth=3, encoder_embed_dim=96, encoder_num_heads=2,
                       encoder_global_attn_indexes=(1,))),
    ("sam_vit_b", dict(encoder_img_size=320, encoder_depth=2, encoder_window_size=6, encoder_global_attn_indexes=(0,))),
    ("efficient_sam_vitt", dict(encoder_img_size=256, encoder_depth=2)),
    ("efficient_sam_vits", dict(encoder_img_size=192, encoder_depth=2, encoder_mlp_ratio=2.0,
                                decoder_transformer_depth=1)),
]
IDS = [f"{n}-{o['encoder_img_size']}px-d{o['encoder_depth']}" for n, o in SMALL]


@pytest.mark.parametrize("name,overrides", SMALL, ids=IDS)
def test_small_encoder_flops_equal_analytic_formula(name, overrides):
    model = F_.meta_model(name, **overrides)
    for batch in (1, 2):
        total, per_op = F_.encoder_flops(model, batch)
        parts = F_.analytic_encoder_flops(model.config.image_encoder, batch)
        assert total == parts["total"]
        # ... and part by part: linear layers are addmm, attention + rel-pos are bmm, patch + neck are conv.
        assert per_op["aten.addmm"] == parts["linear"]
        assert per_op["aten.bmm"] == parts["attention"] + parts["rel_pos"]
        assert per_op["aten.convolution"] == parts["patch_embed"] + parts["neck"]
    assert parts["attention"] > 0  # SDPA is counted (pytorch#195460: not always on real CPU tensors)


@pytest.mark.parametrize("name,overrides", SMALL, ids=IDS)
def test_small_decoder_flops_equal_analytic_formula(name, overrides):
    model = F_.meta_model(name, **overrides)
    for n in (1, 5):
        total, _ = F_.decoder_flops(model, n)
        assert total == F_.analytic_decoder_flops(model.config, n)["total"]


@pytest.mark.parametrize("name,overrides", SMALL[:1] + SMALL[2:3], ids=IDS[:1] + IDS[2:3])
def test_fvcore_agrees_with_flop_counter_once_sdpa_is_handled(name, overrides):
    torch.manual_seed(0)
    model = es.build_model(name, **overrides)
    meta = F_.meta_model(name, **overrides)
    x = F_.encoder_inputs(model)
    enc_fc = F_.encoder_flops(meta)[0] / 2  # MACs
    enc_fv, by_op, _ = F_.fvcore_macs(model.image_encoder, (x,))
    assert abs(enc_fv / enc_fc - 1) < 0.01
    dec_fc = F_.decoder_flops(meta, 1)[0] / 2
    dec_fv, _, _ = F_.fvcore_macs(F_.DecoderCall(model), F_.decoder_inputs(model, 1))
    assert abs(dec_fv / dec_fc - 1) < 0.01
    # Without the handle fvcore silently drops exactly the SDPA attention (QK^T + AV) MACs.
    enc_fv0, _, unsupported = F_.fvcore_macs(model.image_encoder, (x,), sdpa_handle=False)
    assert "aten::scaled_dot_product_attention" in unsupported
    assert enc_fv - enc_fv0 == F_.analytic_encoder_flops(model.config.image_encoder)["attention"] // 2
    assert by_op["scaled_dot_product_attention"] == enc_fv - enc_fv0


# ../shared/reference/performance.md §1 (GFLOPs, GMACs, encoder params) and §2 (decoder).
REFERENCE = {
    "sam_vit_h": (5961.1, 2980.5, 637.03),
    "sam_vit_l": (2985.7, 1492.8, 308.28),
    "sam_vit_b": (972.1, 486.0, 89.67),
    "efficient_sam_vits": (491.2, 245.6, 22.35),  # params in EfficientSAM's [1, 197, D] pos-embed layout
    "efficient_sam_vitt": (204.5, 102.3, 6.16),
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_full_size_encoders_match_performance_reference(name):
    gflops, gmacs, mparams = REFERENCE[name]
    model = F_.meta_model(name)
    flops, _ = F_.encoder_flops(model)
    assert round(flops / 1e9, 1) == gflops
    assert round(flops / 2e9, 1) == gmacs
    assert flops == F_.analytic_encoder_flops(model.config.image_encoder)["total"]
    assert round(F_.param_counts(model)["image_encoder"] / 1e6, 2) == mparams


def test_full_size_decoder_per_prompt():
    for name, prompt_params in (("sam_vit_b", 6_220), ("efficient_sam_vitt", 1_024)):
        model = F_.meta_model(name)
        counts = F_.param_counts(model)
        assert (counts["prompt_encoder"], counts["mask_decoder"]) == (prompt_params, 4_058_340)
        flops, _ = F_.decoder_flops(model, 1)
        assert round(flops / 2e9, 1) == 1.8  # "≈ 3.6 GFLOPs (≈ 1.8 GMACs) per prompt"
        # A batch of 64 boxes costs 64x one prompt, less what is computed once per call: the dense PE
        # and layer 0's image-side projections (6 * Ni * D * Di FLOPs).
        f64, _ = F_.decoder_flops(model, 64)
        md = model.config.mask_decoder
        once = F_.analytic_decoder_flops(model.config, 1)["dense_pe"] + 6 * 64 * 64 * 256 * 128
        assert md.transformer_dim == 256 and md.attention_downsample_rate == 2
        assert f64 == 64 * (flops - once) + once


def test_official_encoder_counts_the_same():
    """The official segment_anything encoder (explicit attention) gives our count: same architecture."""
    model = F_.meta_model("sam_vit_b")
    with torch.device("meta"):
        official = bench.build_official(model.config)
    official.requires_grad_(False)
    x = F_.encoder_inputs(model)
    assert F_.count_flops(official.image_encoder, x)[0] == F_.encoder_flops(model)[0]


def test_reference_model_loads_our_weights():
    torch.manual_seed(0)
    cfg_over = dict(encoder_img_size=128, encoder_depth=2, encoder_embed_dim=64, encoder_num_heads=2,
                    encoder_global_attn_indexes=(1,))
    ours = es.build_model("sam_vit_b", **cfg_over)
    official = bench.build_official(ours.config)
    official.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = ours.image_encoder(x), official.image_encoder(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(bench.ReferenceUnavailable, match="EfficientSAM"):
        bench.check_reference(es.get_config("efficient_sam_vitt"))


@pytest.mark.slow
def test_esam_bench_smoke(tmp_path):
    out = tmp_path / "bench"
    argv = [
        "--models", "sam_vit_b", "efficient_sam_vitt", "--reference", "--device", "cpu",
        "--image-size", "128", "--set", "encoder_depth=1", "--set", "encoder_global_attn_indexes=[0]",
        "--set", "encoder_embed_dim=64", "--set", "encoder_num_heads=2",
        "--prompts", "4", "--warmup", "1", "--repeats", "2",
        "--json", str(out / "b.json"), "--markdown", str(out / "b.md"), "--plot", str(out / "b.png"),
        "--no-progress",
    ]
    assert bench.main(argv) == 0
    report = json.loads((out / "b.json").read_text())
    runs = {(r["model"], r["impl"]): r for r in report["results"]}
    assert set(runs) == {("sam_vit_b", "ours"), ("sam_vit_b", "official"), ("efficient_sam_vitt", "ours")}
    for r in runs.values():
        assert "error" not in r
        for phase in bench.PHASES:
            lat = r["latency_ms"][phase]
            assert lat["n"] == 2 and 0 < lat["min"] <= lat["median"] <= lat["max"]
        assert r["params"] > 0 and r["gmacs_encoder"] > 0 and r["gmacs_decoder_per_prompt"] > 0
        assert r["throughput_img_s"] > 0 and r["peak_mem_mb"] >= 0
    ours, official = runs[("sam_vit_b", "ours")], runs[("sam_vit_b", "official")]
    assert ours["params"] == official["params"]
    assert ours["gmacs_encoder"] == official["gmacs_encoder_official_counted"]
    for r in (ours, runs[("efficient_sam_vitt", "ours")]):
        assert abs(r["fvcore_rel_diff_encoder"]) < 0.01 and abs(r["fvcore_rel_diff_decoder"]) < 0.01
    assert [q["model"] for q in report["ratios"]] == ["sam_vit_b"]
    assert all(q[p] > 0 for q in report["ratios"] for p in bench.PHASES)
    assert any("EfficientSAM" in n for n in report["notes"])
    md = (out / "b.md").read_text()
    assert "| sam_vit_b | official |" in md and "Ours / official" in md and "fvcore" in md
    with Image.open(out / "b.png") as im:
        assert im.size == (900, 600) and im.mode == "RGB"
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # not blank
