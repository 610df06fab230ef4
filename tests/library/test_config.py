"""Config overrides from Python keywords and from `key=value` command-line strings."""

import pytest

import efficient_sam as es
from efficient_sam.config import ImageEncoderConfig, SamConfig, apply_overrides, parse_override


@pytest.mark.parametrize(
    "text, expected",
    [
        ("encoder_depth=2", ("encoder_depth", 2)),
        ("decoder_activation=gelu", ("decoder_activation", "gelu")),
        ("encoder_global_attn_indexes=[1, 3]", ("encoder_global_attn_indexes", (1, 3))),
        ("encoder_global_attn_indexes=(1,3)", ("encoder_global_attn_indexes", (1, 3))),
        ("prompt_mask_prompt=false", ("prompt_mask_prompt", False)),
        ("mask_threshold=0.5", ("mask_threshold", 0.5)),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_parse_override_needs_equals():
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_override("encoder_depth")


def test_overrides_reach_the_sub_configs_and_round_trip():
    cfg = es.get_config("sam_vit_b", **dict(map(parse_override, ["encoder_depth=2", "decoder_activation=gelu"])))
    assert cfg.image_encoder.depth == 2 and cfg.mask_decoder.activation == "gelu"
    assert es.get_config("sam_vit_b").image_encoder.depth == 12  # the registry is not mutated
    assert SamConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TypeError, match="unknown override"):
        apply_overrides(cfg, encoder_nonsense=1)


# ------------------------------------------------------------------------------------------------
# Bad model configs: a clear error naming the parameter (issue 13), from every entry point


def _build(name="sam_vit_b", **overrides):
    return lambda: es.build_model(name, **overrides)


def _sam_with(**encoder):
    return lambda: es.Sam(SamConfig(image_encoder=ImageEncoderConfig(**encoder)))


BAD_CONFIGS = {
    # silent before
    "depth_negative": (_build(encoder_depth=-1), ValueError, r"encoder_depth \(image_encoder\.depth\) = -1: must be >= 1"),
    "depth_zero": (_build("efficient_sam_vitt", encoder_depth=0), ValueError, r"encoder_depth .* = 0: must be >= 1"),
    "img_size_not_a_multiple_of_patch": (
        _build(encoder_img_size=1000), ValueError,
        r"encoder_img_size \(image_encoder\.img_size\) = 1000: must be a multiple of encoder_patch_size 16.*e\.g\. 992",
    ),
    "global_index_beyond_depth": (
        _build(encoder_depth=2, encoder_global_attn_indexes=(1, 5)), ValueError,
        r"encoder_global_attn_indexes .* = \(1, 5\): names blocks \[5\] that the 2-block encoder does not have",
    ),
    "negative_global_index": (_build(encoder_global_attn_indexes=(-1,)), ValueError, r"encoder_global_attn_indexes .*\[-1\]"),
    "overrides_with_a_config_object": (
        lambda: es.build_model(es.get_config("sam_vit_b"), encoder_depth=-1), ValueError, r"encoder_depth .* must be >= 1",
    ),
    "config_object_built_by_hand": (
        _sam_with(depth=2, global_attn_indexes=(7,)), ValueError, r"encoder_global_attn_indexes .*\[7\]",
    ),
    # unclear before (an error deep inside torch)
    "embed_dim_not_divisible_by_heads": (
        _build(encoder_embed_dim=100), ValueError,
        r"encoder_embed_dim \(image_encoder\.embed_dim\) = 100: must be divisible by encoder_num_heads 12",
    ),
    "str_for_int_override": (_build(encoder_depth="2"), TypeError, r"override encoder_depth='2': expected an int, got str"),
    "str_for_int_in_a_config_object": (
        _sam_with(depth="2"), TypeError, r"encoder_depth \(image_encoder\.depth\) must be an int, got '2' \(str\)",
    ),
    "float_for_int": (_build(encoder_num_heads=2.5), TypeError, r"encoder_num_heads=2\.5: expected an int"),
    "int_for_tuple": (_build(encoder_global_attn_indexes=1), TypeError, r"encoder_global_attn_indexes=1: expected a tuple of ints"),
    "nan_threshold": (_build(mask_threshold=float("nan")), TypeError, r"mask_threshold=nan: expected a finite float"),
    "unknown_activation": (
        _build(decoder_activation="tanh"), ValueError,
        r"decoder_activation \(mask_decoder\.activation\) = 'tanh': unknown value; expected one of 'relu', 'gelu'",
    ),
    "unknown_family": (_build(family="mobile_sam"), ValueError, r"family = 'mobile_sam': unknown model family"),
    "pixel_mean_of_two": (_build(pixel_mean=(1.0, 2.0)), TypeError, r"pixel_mean=\(1\.0, 2\.0\): expected a tuple of 3"),
    "mismatched_widths": (_build(encoder_out_chans=128), ValueError, r"encoder_out_chans 128, prompt_embed_dim 256 and "),
    "decoder_heads": (_build(decoder_transformer_num_heads=3), ValueError, r"decoder_transformer_num_heads .* = 3: must divide"),
    "zero_max_points": (_build("efficient_sam_vitt", prompt_max_points=0), ValueError, r"prompt_max_points .* must be >= 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_model_configs_raise_errors_naming_the_parameter(case):
    make, exc, pattern = BAD_CONFIGS[case]
    with pytest.raises(exc, match=pattern):
        make()


def test_overrides_apply_to_a_config_object_and_stale_global_blocks_are_dropped():
    cfg = es.get_config("sam_vit_b")
    model = es.build_model(cfg, encoder_depth=1, encoder_embed_dim=32, encoder_num_heads=2)
    assert len(model.image_encoder.blocks) == 1 and model.config.image_encoder.embed_dim == 32
    assert cfg == es.get_config("sam_vit_b")  # the object passed in is not changed
    # A lower depth alone keeps the registered global blocks that still exist (README: sam_vit_b, depth 2).
    assert es.get_config("sam_vit_b", encoder_depth=2).image_encoder.global_attn_indexes == ()
    assert es.get_config("sam_vit_b", encoder_depth=6).image_encoder.global_attn_indexes == (2, 5)
    assert es.get_config("sam_vit_b", encoder_depth=16).image_encoder.global_attn_indexes == (2, 5, 8, 11)
    for name in es.list_models():  # every registered config is valid
        es.get_config(name).validate()


def test_convert_set_with_a_wrong_type_names_the_key(tmp_path, capsys):
    from efficient_sam.tools import convert

    # checked before the source is even looked up (no download for a typo)
    assert convert.main(["does/not-exist", str(tmp_path / "out"), "--set", "encoder_depth=two"]) == 1
    err = capsys.readouterr().err
    assert "encoder_depth='two'" in err and "expected an int" in err
