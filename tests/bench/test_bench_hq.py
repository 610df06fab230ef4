"""`esam-bench --hq`: HQ-SAM rows next to their base rows, the adapter's parameters, GMACs of the HQ path
and the "HQ over base" table, on a tiny config."""

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import bench
from benchmarks import flops as F_

WIDTH = 64
OVERRIDES = dict(encoder_depth=1, encoder_global_attn_indexes=(0,), encoder_embed_dim=WIDTH, encoder_num_heads=2)


def adapter_params(width: int) -> int:
    """HQ token + its MLP + the fusion convs: 284,672 + 1024 x encoder width (1,071,104 for ViT-B)."""
    return 284_672 + 1024 * width


def test_esam_bench_hq(tmp_path):
    out = tmp_path / "bench"
    argv = [
        "--models", "efficient_sam_vitt", "sam_vit_b", "--hq", "--device", "cpu", "--image-size", "256",
        "--set", "encoder_depth=1", "--set", "encoder_global_attn_indexes=(0,)",
        "--set", f"encoder_embed_dim={WIDTH}", "--set", "encoder_num_heads=2",
        "--prompts", "4", "--warmup", "0", "--repeats", "1",
        "--json", str(out / "b.json"), "--markdown", str(out / "b.md"), "--plot", str(out / "b.png"),
        "--no-progress",
    ]
    assert bench.main(argv) == 0
    report = json.loads((out / "b.json").read_text())
    res = report["results"]
    assert [(r["model"], r["impl"]) for r in res] == [
        ("efficient_sam_vitt", "ours"), ("efficient_sam_vitt+hq", "ours"), ("sam_vit_b", "ours"), ("sam_vit_b+hq", "ours"),
    ]
    runs = {r["model"]: r for r in res}
    for name in ("efficient_sam_vitt", "sam_vit_b"):
        base, hq = runs[name], runs[name + "+hq"]
        assert "error" not in base and "error" not in hq
        assert hq["hq"] is True and hq["base_model"] == name and "hq" not in base
        assert hq["params_added"] == hq["params"] - base["params"] == adapter_params(WIDTH)
        assert hq["params_base"] == base["params"] and hq["params_by_part"]["hq_adapter"] == adapter_params(WIDTH)
        assert hq["hq_early_block"] == 0  # depth 1: block 0 for both families
        for phase in bench.PHASES:
            assert hq["latency_ms"][phase]["n"] == 1 and hq["latency_ms"][phase]["median"] > 0
        # the fusion adds encoder GMACs; the HQ mask features add decoder GMACs per prompt
        assert hq["gmacs_encoder"] > base["gmacs_encoder"] > 0
        assert hq["gmacs_decoder_per_prompt"] > base["gmacs_decoder_per_prompt"] > 0
        # 4 prompts cost less than 4 x 1: an image's tokens are projected once up to the first
        # image-to-token update, and only the prompt side grows with the number of prompts
        assert 3 * hq["gmacs_decoder_per_prompt"] < hq["gmacs_decoder_n"] < 4 * hq["gmacs_decoder_per_prompt"]
        # fvcore traces the HQ calls too and agrees with FlopCounterMode (it also counts norms)
        assert abs(hq["fvcore_rel_diff_encoder"]) < 0.02 and abs(hq["fvcore_rel_diff_decoder"]) < 0.02
        assert hq["throughput_img_s"] > 0 and hq["peak_mem_mb"] >= 0
    over = {q["model"]: q for q in report["hq_overhead"]}
    assert list(over) == ["efficient_sam_vitt", "sam_vit_b"]
    for name, q in over.items():
        assert q["params_added"] == adapter_params(WIDTH) and q["params_base"] == runs[name]["params"]
        assert q["encoder_added_ms"] == pytest.approx(
            runs[name + "+hq"]["latency_ms"]["encoder"]["median"] - runs[name]["latency_ms"]["encoder"]["median"]
        )
    assert report["ratios"] == []
    assert any("+hq" in n and "encode_image_hq" in n for n in report["notes"])
    md = (out / "b.md").read_text()
    assert "| sam_vit_b+hq | ours |" in md and "| efficient_sam_vitt+hq | ours |" in md
    assert "HQ over base" in md and f"| sam_vit_b | {adapter_params(WIDTH):,} (+" in md
    with Image.open(out / "b.png") as im:
        assert im.size == (900, 600) and len(np.unique(np.asarray(im.convert("L")))) > 10


def test_hq_flops_full_size_and_params():
    """Full-size counts on the meta device: the adapter's size per backbone and the HQ path's GMACs."""
    for name, width in (("sam_vit_b", 768), ("efficient_sam_vitt", 192), ("efficient_sam_vits", 384)):
        hq, base = F_.meta_hq_model(name), F_.meta_model(name)
        added = F_.param_counts(hq)["total"] - F_.param_counts(base)["total"]
        assert added == F_.param_counts(hq)["hq_adapter"] == adapter_params(width)
        assert F_.hq_encoder_flops(hq)[0] > F_.encoder_flops(base)[0]
        assert F_.hq_decoder_flops(hq, 1)[0] > F_.decoder_flops(base, 1)[0]
    assert adapter_params(768) == 1_071_104


def test_markdown_and_plot_without_gmacs(tmp_path):
    """Rows without GMACs (None) render as "-" in both tables; the plot still draws."""
    lat = {p: {"median": 2.0, "min": 1.0, "max": 3.0} for p in bench.PHASES}
    lat_hq = {p: {"median": 3.0, "min": 2.0, "max": 4.0} for p in bench.PHASES}
    common = dict(impl="ours", throughput_img_s=1.0, peak_mem_mb=1.0, gmacs_encoder=None, gmacs_decoder_per_prompt=None)
    results = [
        dict(model="m", params=1000, latency_ms=lat, **common),
        dict(model="m+hq", params=1100, latency_ms=lat_hq, hq=True, base_model="m", **common),
    ]
    report = {
        "args": dict(prompts=4, device="cpu", dtype="fp32", batch_size=1, image_size=256, compile=False, warmup=0,
                     repeats=1),
        "machine": {"cpu": "x", "torch": "t", "torch_threads": 1},
        "results": results, "ratios": [], "hq_overhead": bench.hq_overhead(results), "notes": [],
    }
    md = bench.markdown(report)
    assert "| m+hq | ours | 0.00 | - | - |" in md
    assert "| m | 100 (+10.0%) | - (-) | - (-) | +1.00 ms (+50.0%) |" in md
    bench.plot(report, tmp_path / "p.png")
    assert (tmp_path / "p.png").is_file()


def test_esam_bench_hq_with_reference(tmp_path):
    """--reference times the official model for the base rows only; the ratios cover the base model."""
    argv = [
        "--models", "sam_vit_b", "--hq", "--reference", "--device", "cpu", "--image-size", "256",
        "--set", "encoder_depth=1", "--set", "encoder_global_attn_indexes=(0,)",
        "--set", f"encoder_embed_dim={WIDTH}", "--set", "encoder_num_heads=2",
        "--prompts", "2", "--warmup", "0", "--repeats", "1", "--no-fvcore", "--json", str(tmp_path / "b.json"),
        "--no-progress",
    ]
    assert bench.main(argv) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert [(r["model"], r["impl"]) for r in report["results"]] == [
        ("sam_vit_b", "ours"), ("sam_vit_b+hq", "ours"), ("sam_vit_b", "official"),
    ]
    assert all("error" not in r for r in report["results"])
    assert [q["model"] for q in report["ratios"]] == ["sam_vit_b"]
    assert [q["model"] for q in report["hq_overhead"]] == ["sam_vit_b"]
    assert report["hq_overhead"][0]["params_added"] == adapter_params(WIDTH)
    assert any("base models only" in n for n in report["notes"])
