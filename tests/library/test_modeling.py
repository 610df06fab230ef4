"""Model structure (parameter counts, key layouts), attention kernels against the naive formula,
config overrides, and checkpoint loading / error reporting."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry

import efficient_sam as es
from efficient_sam import checkpoint as ckpt
from efficient_sam.modeling.image_encoder import Attention as EncoderAttention
from efficient_sam.modeling.two_way_transformer import Attention as TwoWayAttention
from helpers import randomize_, rel_err
from official_sam import build_official_sam


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def read_key_file(path: Path) -> dict[str, tuple[int, ...]]:
    """`key<TAB>[shape](<TAB>dtype)` lines of a reference key listing; '#' lines are comments."""
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")[:2]
        out[key] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return out


def shapes(sd) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


# ---------------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------------

# name -> (total, image encoder, prompt encoder, mask decoder, state_dict keys)
PARAMS = {
    "sam_vit_h": (641_090_608, 637_026_048, 6_220, 4_058_340, 594),
    "sam_vit_l": (312_342_832, 308_278_272, 6_220, 4_058_340, 482),
    "sam_vit_b": (93_735_472, 89_670_912, 6_220, 4_058_340, 314),
    "efficient_sam_vitt": (10_223_204, 6_163_840, 1_024, 4_058_340, 278),
    "efficient_sam_vits": (26_413_028, 22_353_664, 1_024, 4_058_340, 278),
}


def test_list_models():
    assert es.list_models() == sorted(PARAMS)


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_counts(name):
    total, enc, pe, dec, n_keys = PARAMS[name]
    with torch.device("meta"):
        m = es.build_model(name)
    assert n_params(m.image_encoder) == enc
    assert n_params(m.prompt_encoder) == pe
    assert n_params(m.mask_decoder) == dec
    assert n_params(m) == total
    sd = m.state_dict()
    assert len(sd) == n_keys
    # pixel_mean / pixel_std are non-persistent; the Fourier matrix is a saved buffer
    assert "pixel_mean" not in sd and "pixel_std" not in sd
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in sd
    assert not m.training


@pytest.mark.parametrize("size", ["vit_h", "vit_l", "vit_b"])
def test_sam_keys_equal_official(size, asset_paths):
    """Our key layout is the official one: same keys and shapes as segment_anything's builder and the
    reference listing of the released checkpoint."""
    with torch.device("meta"):
        ours = es.build_model(f"sam_{size}")
        official = sam_model_registry[size]()
    assert shapes(ours.state_dict()) == shapes(official.state_dict())
    assert shapes(ours.state_dict()) == read_key_file(asset_paths.keys / f"sam_{size}.txt")


@pytest.mark.parametrize("name", ["efficient_sam_vitt", "efficient_sam_vits"])
def test_efficient_sam_keys_equal_official(name, asset_paths):
    """Converted to the EfficientSAM layout, our state dict has the released checkpoint's keys and shapes."""
    with torch.device("meta"):
        ours = es.build_model(name)
    assert shapes(ckpt.to_efficient_sam_layout(ours.state_dict())) == read_key_file(asset_paths.keys / f"{name}.txt")


# ---------------------------------------------------------------------------------------------------
# Attention through SDPA == the written-out formula (fresh random inputs each run: no fixed seed)
# ---------------------------------------------------------------------------------------------------


def naive_rel_table(rel_pos: torch.Tensor, q_size: int, k_size: int) -> torch.Tensor:
    """R[i, j] = table[i - j + k_size - 1] (q_size == k_size), the table linearly resized to 2S - 1 rows
    first when its length differs."""
    assert q_size == k_size
    n = 2 * q_size - 1
    if rel_pos.shape[0] != n:
        rel_pos = F.interpolate(rel_pos.T[None], size=n, mode="linear")[0].T
    i = torch.arange(q_size)[:, None]
    j = torch.arange(k_size)[None, :]
    return rel_pos[i - j + k_size - 1]  # (q, k, head_dim)


def naive_encoder_attention(attn: EncoderAttention, x: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T * scale + Rh[qh, kh] . q + Rw[qw, kw] . q) v, then the output projection."""
    B, H, W, C = x.shape
    nh = attn.num_heads
    hd = C // nh
    qkv = x.reshape(B, H * W, C) @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv.reshape(B, H * W, 3, nh, hd).permute(2, 0, 3, 1, 4)  # each (B, nh, N, hd)
    logits = (q * hd**-0.5) @ k.transpose(-2, -1)  # (B, nh, N, N)
    Rh = naive_rel_table(attn.rel_pos_h, H, H)  # (H, H, hd)
    Rw = naive_rel_table(attn.rel_pos_w, W, W)
    qg = q.reshape(B, nh, H, W, hd)
    rel_h = (qg[:, :, :, :, None, :] * Rh[None, None, :, None, :, :]).sum(-1)  # (B, nh, H, W, kh)
    rel_w = (qg[:, :, :, :, None, :] * Rw[None, None, None, :, :, :]).sum(-1)  # (B, nh, H, W, kw)
    bias = rel_h[:, :, :, :, :, None] + rel_w[:, :, :, :, None, :]  # (B, nh, H, W, kh, kw)
    logits = logits + bias.reshape(B, nh, H * W, H * W)
    out = logits.softmax(dim=-1) @ v  # (B, nh, N, hd)
    out = out.transpose(1, 2).reshape(B, H, W, C)
    return out @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize(
    "h, w, table, batch, dim, heads",
    [
        (14, 14, 14, 6, 48, 3),  # windowed block: batch of 14x14 windows, table of 27 rows
        (10, 14, 14, 2, 32, 2),  # non-square grid: the h table is resized (27 -> 19 rows)
        (64, 64, 64, 1, 32, 2),  # global block on SAM's 64x64 token grid, table of 127 rows
        (32, 32, 64, 1, 48, 3),  # global block at half resolution: table resized 127 -> 63
    ],
)
def test_encoder_attention_equals_naive(h, w, table, batch, dim, heads):
    attn = EncoderAttention(dim, heads, qkv_bias=True, use_rel_pos=True, rel_pos_size=table).eval()
    with torch.no_grad():
        attn.rel_pos_h.normal_(0, 0.5)  # zero-initialised otherwise
        attn.rel_pos_w.normal_(0, 0.5)
        x = torch.randn(batch, h, w, dim)
        got = attn(x)
        want = naive_encoder_attention(attn, x)
    assert got.shape == x.shape
    assert rel_err(got, want) <= 1e-5


def test_encoder_attention_equals_official_module():
    """The same against segment_anything's Attention (explicit matrices), with weights copied."""
    from segment_anything.modeling.image_encoder import Attention as OfficialAttention

    dim, heads, size = 64, 4, 14
    official = OfficialAttention(dim, heads, qkv_bias=True, use_rel_pos=True, input_size=(size, size))
    ours = EncoderAttention(dim, heads, qkv_bias=True, use_rel_pos=True, rel_pos_size=size)
    with torch.no_grad():
        official.rel_pos_h.normal_(0, 0.5)
        official.rel_pos_w.normal_(0, 0.5)
        ours.load_state_dict(official.state_dict())
        x = torch.randn(5, size, size, dim)
        assert rel_err(ours(x), official(x)) <= 1e-5


def test_encoder_attention_without_rel_pos_takes_token_lists():
    """EfficientSAM blocks (no rel-pos) also take (B, N, C) token subsets."""
    attn = EncoderAttention(48, 3, qkv_bias=True, use_rel_pos=False).eval()
    x = torch.randn(2, 37, 48)
    with torch.no_grad():
        qkv = x @ attn.qkv.weight.T + attn.qkv.bias
        q, k, v = qkv.reshape(2, 37, 3, 3, 16).permute(2, 0, 3, 1, 4)
        want = ((q @ k.transpose(-2, -1)) / 4.0).softmax(-1) @ v
        want = want.transpose(1, 2).reshape(2, 37, 48) @ attn.proj.weight.T + attn.proj.bias
        assert rel_err(attn(x), want) <= 1e-5
        # and on the grid it is the same computation
        assert rel_err(attn(x[:, :36].reshape(2, 6, 6, 48)).reshape(2, 36, 48), attn(x[:, :36])) <= 1e-6


@pytest.mark.parametrize("downsample", [1, 2])
def test_two_way_attention_equals_naive(downsample):
    dim, heads = 64, 4
    attn = TwoWayAttention(dim, heads, downsample_rate=downsample).eval()
    q, k, v = torch.randn(3, 7, dim), torch.randn(3, 50, dim), torch.randn(3, 50, dim)
    with torch.no_grad():
        got = attn(q, k, v)
        inner = dim // downsample
        hd = inner // heads

        def heads_of(x, lin):
            return (x @ lin.weight.T + lin.bias).reshape(x.shape[0], x.shape[1], heads, hd).transpose(1, 2)

        qh, kh, vh = heads_of(q, attn.q_proj), heads_of(k, attn.k_proj), heads_of(v, attn.v_proj)
        out = ((qh @ kh.transpose(-2, -1)) / math.sqrt(hd)).softmax(dim=-1) @ vh  # (B, heads, Nq, hd)
        want = out.transpose(1, 2).reshape(3, 7, inner) @ attn.out_proj.weight.T + attn.out_proj.bias
    assert got.shape == (3, 7, dim)
    assert rel_err(got, want) <= 1e-5


# ---------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------


def test_overrides_apply_and_do_not_leak():
    cfg = es.get_config(
        "sam_vit_b", encoder_depth=2, encoder_global_attn_indexes=[1], decoder_activation="gelu", mask_threshold=0.5
    )
    assert cfg.image_encoder.depth == 2
    assert cfg.image_encoder.global_attn_indexes == (1,)  # lists become tuples
    assert cfg.mask_decoder.activation == "gelu"
    assert cfg.mask_threshold == 0.5
    fresh = es.get_config("sam_vit_b")
    assert fresh.image_encoder.depth == 12 and fresh.mask_decoder.activation == "relu"
    assert fresh.image_encoder.global_attn_indexes == (2, 5, 8, 11)


@pytest.mark.parametrize(
    "override", [{"encoder_depht": 2}, {"depth": 2}, {"decoder_nonexistent": 1}, {"encoder__hidden": 1}]
)
def test_unknown_override_raises_type_error(override):
    with pytest.raises(TypeError, match="unknown override"):
        es.build_model("sam_vit_b", **override)


def test_unknown_model_raises_key_error_listing_models():
    with pytest.raises(KeyError, match="nope") as e:
        es.build_model("nope")
    for name in es.list_models():
        assert name in str(e.value)


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------

SMALL_SAM = dict(encoder_depth=2, encoder_embed_dim=32, encoder_num_heads=2, encoder_global_attn_indexes=(1,))
SMALL_OFFICIAL = dict(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,))


@pytest.fixture(scope="module")
def official_small_sd():
    """A small official segment_anything model's state dict (random values)."""
    return randomize_(build_official_sam(**SMALL_OFFICIAL), seed=3).state_dict()


@pytest.fixture(scope="module")
def esam_official_sd(efficient_sam_vitt_sd):
    return efficient_sam_vitt_sd


def test_official_sam_pth_loads(tmp_path, official_small_sd):
    path = tmp_path / "sam_small.pth"
    torch.save(official_small_sd, path)
    m = es.build_model("sam_vit_b", checkpoint=path, **SMALL_SAM)
    sd = m.state_dict()
    assert sd.keys() == official_small_sd.keys()
    for k, v in official_small_sd.items():
        assert torch.equal(sd[k], v), k
    assert not m.training
    # the same through load_checkpoint with an in-memory state dict
    m2 = es.load_checkpoint(es.build_model("sam_vit_b", **SMALL_SAM), official_small_sd)
    assert all(torch.equal(v, official_small_sd[k]) for k, v in m2.state_dict().items())


@pytest.mark.parametrize("wrapper", ["model", None])
def test_official_efficient_sam_pt_loads(tmp_path, esam_official_sd, wrapper):
    """Official EfficientSAM files are {"model": state_dict} in their own key layout."""
    path = tmp_path / "efficient_sam_vitt.pt"
    torch.save(esam_official_sd if wrapper is None else {wrapper: esam_official_sd}, path)
    m = es.build_model("efficient_sam_vitt", checkpoint=path)
    back = ckpt.to_efficient_sam_layout(m.state_dict())
    assert back.keys() == esam_official_sd.keys()
    for k, v in esam_official_sd.items():
        assert torch.equal(back[k], v), k


def test_wrong_model_names_missing_unexpected_and_shape_conflicts(tmp_path):
    """A (small) SAM file loaded into EfficientSAM-Ti: the error lists all three kinds of mismatch."""
    path = tmp_path / "sam_small.pth"
    torch.save(es.build_model("sam_vit_b", **SMALL_SAM).state_dict(), path)
    with pytest.raises(es.CheckpointError) as e:
        es.build_model("efficient_sam_vitt", checkpoint=path)
    msg = str(e.value)
    assert str(path) in msg
    # EfficientSAM-Ti has 12 blocks, the file 2
    assert re.search(r"missing keys \(\d+\):\s+image_encoder\.blocks\.10\.", msg)
    assert re.search(r"unexpected keys \(\d+\)", msg)
    assert "image_encoder.blocks.0.attn.rel_pos_h" in msg  # EfficientSAM has no rel-pos
    assert re.search(r"shape conflicts \(\d+\)", msg)
    assert "image_encoder.blocks.0.attn.qkv.weight: checkpoint (96, 32) vs model (576, 192)" in msg
    assert re.search(r"\.\.\. and \d+ more", msg)  # long lists are cut, with a count


def test_partial_state_dict_names_missing_keys():
    sd = es.build_model("sam_vit_b", **SMALL_SAM).state_dict()
    del sd["mask_decoder.iou_token.weight"]
    sd["mask_decoder.extra.weight"] = torch.zeros(3)
    with pytest.raises(es.CheckpointError, match=r"missing keys \(1\):\s+mask_decoder\.iou_token\.weight") as e:
        es.load_checkpoint(es.build_model("sam_vit_b", **SMALL_SAM), sd)
    assert "mask_decoder.extra.weight" in str(e.value)
    assert "shape conflicts" not in str(e.value)


def test_truncated_file_raises(tmp_path, official_small_sd):
    full = tmp_path / "full.pth"
    torch.save(official_small_sd, full)
    data = full.read_bytes()
    cut = tmp_path / "truncated.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(es.CheckpointError, match="truncated"):
        es.build_model("sam_vit_b", checkpoint=cut, **SMALL_SAM)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(es.CheckpointError, match="could not read"):
        es.build_model("sam_vit_b", checkpoint=garbage, **SMALL_SAM)


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        es.build_model("sam_vit_b", checkpoint=tmp_path / "nope.pth", **SMALL_SAM)


@dataclasses.dataclass
class TrainingState:  # a custom class: unpickling it needs arbitrary code import
    step: int
    weights: dict


class WritesFile:
    """Unpickling this object would create `path` (the pickle calls open(path, "w"))."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _a_function():
    return 1


@pytest.mark.parametrize("kind", ["dataclass", "function", "reduce"])
def test_pickled_code_is_refused_never_executed(tmp_path, official_small_sd, kind):
    marker = tmp_path / "was_executed"
    payload = {
        "dataclass": {"model": TrainingState(step=1, weights=dict(official_small_sd))},
        "function": {"model": official_small_sd, "hook": _a_function},
        "reduce": {"model": official_small_sd, "x": WritesFile(str(marker))},
    }[kind]
    path = tmp_path / f"{kind}.pth"
    torch.save(payload, path)
    with pytest.raises(es.CheckpointError, match="pickled code"):
        es.build_model("sam_vit_b", checkpoint=path, **SMALL_SAM)
    assert not marker.exists()
    if kind == "reduce":  # the payload is real: a plain unpickler would have run it
        with open(path, "rb") as f:
            torch.load(f, weights_only=False)["x"].close()
        assert marker.exists()


def test_file_without_tensors_is_refused(tmp_path):
    path = tmp_path / "notes.pth"
    torch.save({"model": {"lr": 1e-3, "step": 5}}, path)
    with pytest.raises(es.CheckpointError, match="state dict of tensors"):
        es.build_model("sam_vit_b", checkpoint=path, **SMALL_SAM)


def test_hq_sam_state_dict_points_to_build_hq_model(tmp_path, official_small_sd):
    sd = dict(official_small_sd)
    sd["mask_decoder.hf_token.weight"] = torch.zeros(1, 256)
    sd["mask_decoder.hf_mlp.layers.0.weight"] = torch.zeros(256, 256)
    path = tmp_path / "sam_hq_small.pth"
    torch.save(sd, path)
    with pytest.raises(es.CheckpointError, match=r"efficient_sam\.build_hq_model"):
        es.build_model("sam_vit_b", checkpoint=path, **SMALL_SAM)
    with pytest.raises(es.CheckpointError, match="HQ-SAM"):
        es.load_checkpoint(es.build_model("sam_vit_b", **SMALL_SAM), sd)


def test_our_state_dict_round_trips_through_files(tmp_path):
    """Our own state dict saved with torch.save or safetensors loads back identically."""
    from safetensors.torch import save_file

    m = randomize_(es.build_model("efficient_sam_vitt", encoder_depth=1, encoder_embed_dim=32, encoder_num_heads=1))
    sd = m.state_dict()
    for path in (tmp_path / "ours.pth", tmp_path / "ours.safetensors"):
        if path.suffix == ".pth":
            torch.save(sd, path)
        else:
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        m2 = es.build_model("efficient_sam_vitt", checkpoint=path, encoder_depth=1, encoder_embed_dim=32,
                            encoder_num_heads=1)
        assert all(torch.equal(v, sd[k]) for k, v in m2.state_dict().items())
