"""`esam-bench --onnx`: onnxruntime vs torch on a tiny config of both families, fp32 and int8 exports:
every phase timed, ratios are onnx / torch, file sizes are those on disk, the fp32 export matches torch."""

import json
from pathlib import Path

import pytest

from benchmarks import onnx_bench

TINY = ["--set", "encoder_depth=1", "--set", "encoder_global_attn_indexes=(0,)", "--set", "encoder_embed_dim=64",
        "--set", "encoder_num_heads=2", "--set", "encoder_img_size=256"]
MODELS = ("sam_vit_b", "efficient_sam_vitt")


def test_esam_bench_onnx(tmp_path):
    out, exports = tmp_path / "out", tmp_path / "exports"
    argv = ["--models", *MODELS, *TINY, "--prompts", "4", "--warmup", "0", "--repeats", "1", "--quantize", "int8",
            "--threads", "2", "--export-dir", str(exports), "--json", str(out / "o.json"), "--markdown", str(out / "o.md")]
    assert onnx_bench.main(argv) == 0
    report = json.loads((out / "o.json").read_text())
    rows = {(r["model"], r["variant"]): r for r in report["results"]}
    assert set(rows) == {(m, v) for m in MODELS for v in ("fp32", "int8")}
    for (model, variant), r in rows.items():
        assert "error" not in r, r.get("error")
        assert r["img_size"] == 256 and r["prompts"] == 4
        assert set(r["phases"]) == set(onnx_bench.PHASES)
        for p, ph in r["phases"].items():
            for side in ("torch", "onnx"):
                t = ph[side]
                assert 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"] and len(t["all_ms"]) == 1, (model, p, side)
            assert ph["ratio"] == pytest.approx(ph["onnx"]["median_ms"] / ph["torch"]["median_ms"])
        for part in ("encoder", "decoder"):
            path = Path(r["files"][part])
            assert path.parent == exports / f"{model}-{variant}" and path.is_file()
            assert r["file_bytes"][part] == path.stat().st_size > 0
        assert not list((exports / f"{model}-{variant}").glob("*.bench.onnx"))  # the scratch copy is gone
        dev = r["deviation"]
        if variant == "fp32":
            assert dev["embeddings"] <= 1e-4 and dev["low_res_logits"] <= 1e-4, (model, dev)
        else:
            assert 0 < dev["embeddings"] < 0.2 and 0 < dev["low_res_logits"] < 0.2, (model, dev)
    for m in MODELS:  # one torch run per model, shared by its export variants; int8 shrinks only the encoder
        fp32, int8 = rows[(m, "fp32")], rows[(m, "int8")]
        assert fp32["phases"]["encoder"]["torch"] == int8["phases"]["encoder"]["torch"]
        assert int8["file_bytes"]["encoder"] < fp32["file_bytes"]["encoder"]
        assert int8["file_bytes"]["decoder"] == fp32["file_bytes"]["decoder"]
    assert report["args"]["threads"] == 2 and report["onnxruntime"]
    md = (out / "o.md").read_text()
    assert md.startswith("`esam-bench --onnx --models sam_vit_b efficient_sam_vitt")
    assert "| onnx / torch |" in md and "decoder x4 +masks" in md and "| efficient_sam_vitt | int8 | encoder |" in md
    assert md.count("\n- ") == len(report["notes"]) >= 4


def test_esam_bench_onnx_no_masks_temp_export(tmp_path):
    """--no-masks drops the upscaling phase; without --export-dir the exports go to a removed temp folder."""
    argv = ["--models", "efficient_sam_vitt", *TINY, "--set", "encoder_img_size=128", "--prompts", "2", "--warmup", "0",
            "--repeats", "2", "--no-masks", "--json", str(tmp_path / "o.json")]
    assert onnx_bench.main(argv) == 0
    (r,) = json.loads((tmp_path / "o.json").read_text())["results"]
    assert list(r["phases"]) == ["encoder", "decoder x1", "decoder xN"]
    assert all(len(ph[s]["all_ms"]) == 2 for ph in r["phases"].values() for s in ("torch", "onnx"))
    assert r["deviation"]["low_res_logits"] <= 1e-4
    assert not Path(r["files"]["encoder"]).exists()


def test_esam_bench_onnx_bad_input():
    with pytest.raises(SystemExit, match="unknown model"):
        onnx_bench.main(["--models", "sam_vit_q"])
    with pytest.raises(SystemExit, match="--repeats must be >= 1"):
        onnx_bench.main(["--models", "sam_vit_b", "--repeats", "0"])
    with pytest.raises(SystemExit, match="--prompts must be >= 1"):
        onnx_bench.main(["--models", "sam_vit_b", "--prompts", "0"])
    with pytest.raises(SystemExit, match="opset 3 is not supported"):
        onnx_bench.main(["--models", "sam_vit_b", "--opset", "3"])
    with pytest.raises(SystemExit):  # argparse: not a choice
        onnx_bench.main(["--quantize", "int4"])
