"""Config overrides from Python keywords and from `key=value` command-line strings."""

import pytest

import efficient_sam as es
from efficient_sam.config import SamConfig, apply_overrides, parse_override


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
