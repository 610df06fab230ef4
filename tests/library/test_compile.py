"""The models are capturable by torch.compile as one graph (no graph breaks), encoder and decoder."""

import pytest
import torch

import efficient_sam as es

SMALL = {
    "sam_vit_b": dict(encoder_depth=2, encoder_embed_dim=64, encoder_num_heads=2, encoder_global_attn_indexes=(1,)),
    "efficient_sam_vitt": dict(encoder_depth=2),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_fullgraph_capture(name):
    torch._dynamo.reset()
    model = es.build_model(name, **SMALL[name])
    x = torch.randn(1, 3, 1024, 1024)
    enc = torch.compile(model.image_encoder, backend="aot_eager", fullgraph=True)
    emb = enc(x)
    torch.testing.assert_close(emb, model.image_encoder(x), rtol=1e-5, atol=1e-5)

    points = torch.rand(5, 2, 2) * 1000
    labels = torch.tensor([[1, 0]] * 5)
    boxes = torch.tensor([[10.0, 20.0, 500.0, 600.0]] * 5)
    dec = torch.compile(model.decode, backend="aot_eager", fullgraph=True)
    for args in ((points, labels, boxes), (points, labels, None), (None, None, boxes)):
        got = dec(emb, *args, None, True)
        want = model.decode(emb, *args, None, True)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
