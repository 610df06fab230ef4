"""The implementations `esam-bench` times, behind one small interface: `encode(x)`, `decode(emb, boxes,
*extra)`, `decoder_extra_inputs(emb)` and `end_to_end(images, box)`. `OursRunner` (our `Sam`),
`HQRunner` (an HQ-SAM model on its HQ path) and `OfficialRunner` (the official `segment_anything`
model with the same weights, used the way its `SamPredictor` uses it)."""

from __future__ import annotations

import numpy as np
import torch

from efficient_sam import transforms

from . import flops as F_
from .official import build_official

__all__ = ["OursRunner", "HQRunner", "OfficialRunner"]


def _scored_multimask(cfg) -> bool:
    """A box prompt is scored from the single-mask output on SAM, best-of-3 on EfficientSAM (DESIGN.md)."""
    return cfg.family == "efficient_sam"


class OursRunner:
    impl = "ours"

    def __init__(self, model, device: torch.device, dtype: torch.dtype, compile_: bool | str) -> None:
        self.model = model.to(device=device, dtype=dtype)
        self.cfg = model.config
        self.device, self.dtype = device, dtype
        self.encoder, self.decoder, self.decoder_single = self._calls(_scored_multimask(self.cfg))
        if compile_:
            mode = compile_ if isinstance(compile_, str) else None
            self.encoder = torch.compile(self.encoder, mode=mode)
            self.decoder = torch.compile(self.decoder, mode=mode)
            self.decoder_single = torch.compile(self.decoder_single, mode=mode)

    def _calls(self, single_multimask: bool) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
        """(encoder, decoder with all mask tokens, decoder for the end-to-end prompt) of `self.model`."""
        m = self.model
        return m.image_encoder, F_.DecoderCall(m), F_.DecoderCall(m, multimask_output=single_multimask)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decoder_extra_inputs(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inputs the decoder takes besides the embedding and the boxes (none here)."""
        return ()

    def decode(self, emb: torch.Tensor, boxes: torch.Tensor, *extra: torch.Tensor):
        return self.decoder(emb, boxes, *extra)

    def _encode_for_decoder(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return self.encoder(x), ()

    def end_to_end(self, images: list[np.ndarray], box: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = torch.cat([transforms.preprocess(im, cfg, self.device) for im in images]).to(self.dtype)
        emb, extra = self._encode_for_decoder(x)
        size = images[0].shape[:2]
        boxes = transforms.transform_boxes(box.to(self.device).expand(len(images), 4), size, cfg)
        low, iou = self.decoder_single(emb, boxes, *extra)  # one prompt per image, one decoder call
        if low.shape[1] > 1:
            low = low[torch.arange(low.shape[0], device=low.device), iou.argmax(1)][:, None]
        return transforms.postprocess_masks(low.float(), size, cfg) > cfg.mask_threshold


class HQRunner(OursRunner):
    """An HQ-SAM model (`build_hq_model`) on its HQ path: the encoder call is `encode_image_hq` (encoder +
    the fusion, once per image), the decoder calls take the HQ features and return SAM + HQ logits
    (`hq_token_only=False`; one mask per prompt whatever `multimask_output`). `torch.compile` compiles
    these two calls the way `OursRunner` compiles the encoder and the decoder."""

    impl = "ours"

    def __init__(self, model, device: torch.device, dtype: torch.dtype, compile_: bool | str) -> None:
        if not getattr(model, "is_hq", False):
            raise ValueError("HQRunner needs an HQ model (hq_adapter.build_hq_model)")
        super().__init__(model, device, dtype, compile_)

    def _calls(self, single_multimask: bool) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
        m = self.model
        return F_.HQEncoderCall(m), F_.HQDecoderCall(m), F_.HQDecoderCall(m, multimask_output=single_multimask)

    def decoder_extra_inputs(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Random HQ features (B_img, D/8, 4h, 4w) for `emb` (B_img, D, h, w), like the random embedding."""
        b, d, h, w = emb.shape
        return (torch.randn(b, d // 8, 4 * h, 4 * w, device=emb.device).to(emb.dtype),)

    def _encode_for_decoder(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        emb, hq = self.encoder(x)
        return emb, (hq,)


class OfficialRunner:
    """segment_anything's modules, used the way its `SamPredictor` uses them.

    For bf16/fp16 the (tiny) official prompt encoder stays fp32 and its outputs are cast, since the
    official code multiplies fp32 coordinates with its PE matrix and fails in low precision.
    """

    impl = "official"

    def __init__(self, ours_model, device: torch.device, dtype: torch.dtype, compile_: bool | str) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        self.cfg = ours_model.config
        official = build_official(self.cfg)
        official.load_state_dict({k: v.float() for k, v in ours_model.state_dict().items()}, strict=True)
        official.to(device)
        official.image_encoder.to(dtype)
        official.mask_decoder.to(dtype)
        self.model = official
        self.device, self.dtype = device, dtype
        self.resize = ResizeLongestSide(official.image_encoder.img_size)
        self.encoder = official.image_encoder
        self.decoder = self._decode
        if compile_:
            mode = compile_ if isinstance(compile_, str) else None
            self.encoder = torch.compile(self.encoder, mode=mode)
            self.decoder = torch.compile(self._decode, mode=mode)

    def _decode(self, emb: torch.Tensor, boxes: torch.Tensor, multimask_output: bool = True):
        pe = self.model.prompt_encoder
        sparse, dense = pe(points=None, boxes=boxes, masks=None)
        return self.model.mask_decoder(
            image_embeddings=emb, image_pe=pe.get_dense_pe().to(emb.dtype),
            sparse_prompt_embeddings=sparse.to(emb.dtype), dense_prompt_embeddings=dense.to(emb.dtype),
            multimask_output=multimask_output,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decoder_extra_inputs(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ()

    def decode(self, emb: torch.Tensor, boxes: torch.Tensor):
        return self.decoder(emb, boxes)

    def end_to_end(self, images: list[np.ndarray], box: torch.Tensor) -> torch.Tensor:
        m = self.model
        xs = []
        for im in images:  # SamPredictor.set_image
            inp = torch.as_tensor(self.resize.apply_image(im), device=self.device).permute(2, 0, 1).contiguous()
            xs.append(m.preprocess(inp[None].float()))
        input_size = tuple(int(s) for s in self.resize.get_preprocess_shape(*images[0].shape[:2], self.resize.target_length))
        emb = self.encoder(torch.cat(xs).to(self.dtype))
        size = images[0].shape[:2]
        boxes = self.resize.apply_boxes_torch(box.to(self.device)[None], size)
        out = []
        for i in range(len(images)):  # the official mask decoder takes one image embedding per call
            low, _ = self.decoder(emb[i : i + 1], boxes, False)
            out.append(m.postprocess_masks(low.float(), input_size, size) > m.mask_threshold)
        return torch.cat(out)

