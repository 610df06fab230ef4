"""`huggingface_hub.PyTorchModelHubMixin` glue shared by `Sam` and `ImageEncoderViT`.

The mixin gives `save_pretrained(dir)` (config.json + model.safetensors + README.md model card) and
`push_to_hub(repo_id)`. Loading goes through `efficient_sam.from_pretrained`, which is strict: the
mixin's own loader defaults to `strict=False` and would silently ignore missing/extra weights.

`modeling/` imports nothing above it but `config`, so the two things that live above it are wired in
from outside by `efficient_sam.hub` when the package is imported: the loader (`LOADER`) and the
registry name of a config for the model card (`CONFIG_NAME`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from huggingface_hub import PyTorchModelHubMixin

MODEL_CARD_TEMPLATE = """---
# For reference on model card metadata, see the spec: https://github.com/huggingface/hub-docs/blob/main/modelcard.md?plain=1
{{ card_data }}
---

# {{ title | default("Segment Anything model", true) }}

{{ description | default("", true) }}
{% if source %}
Converted from `{{ source }}` ({{ source_format }} format) with `esam-convert`; the weights are unchanged.
{% endif %}
Saved with `save_pretrained` of the `efficient_sam` package (Hugging Face `PyTorchModelHubMixin`):
`config.json` holds the full architecture config and `model.safetensors` the weights, in the official
`segment_anything` key layout.

| | |
|---|---|
| architecture | {{ architecture | default("custom", true) }} |
| parameters | {{ num_params | default("?", true) }} |
{% if config_summary %}| config | {{ config_summary }} |
{% endif %}
## Usage

```python
import efficient_sam as es

model = es.from_pretrained("{{ repo_id | default("path/to/this/folder", true) }}")  # strict loading, eval mode
{{ usage | default("", true) }}
```

`from_pretrained` returns the model in eval mode; call `model.train()` before fine-tuning.
"""

LOADER: Callable[..., Any] | None = None  # efficient_sam.hub.load_as(cls, source, **kwargs)
CONFIG_NAME: Callable[[Any], str | None] = lambda cfg: None  # efficient_sam.registry.config_name


def wire(loader: Callable[..., Any], config_name: Callable[[Any], str | None]) -> None:
    """Connect the mixin to the strict loader and the registry (called once by `efficient_sam.hub`)."""
    global LOADER, CONFIG_NAME
    LOADER, CONFIG_NAME = loader, config_name


def hub_kwargs() -> dict[str, Any]:
    """Class-statement keywords of the mixin (model-card metadata); a fresh dict each time, since the
    mixin appends to the `tags` list it is given."""
    return dict(
        library_name="efficient-sam-distill",
        license="apache-2.0",
        tags=["segment-anything", "efficient-sam", "image-segmentation"],
        pipeline_tag="mask-generation",
        model_card_template=MODEL_CARD_TEMPLATE,
    )


class StrictHubMixin(PyTorchModelHubMixin):
    """PyTorchModelHubMixin whose `from_pretrained` is `efficient_sam.from_pretrained` (strict, every
    supported format) restricted to instances of the class it is called on."""

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        filename: str | None = None,
        revision: str | None = None,
        device: Any = None,
        model: str | None = None,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        map_location: Any = None,
        strict: bool = True,
        **overrides: Any,
    ):
        """Load a model of this class from a Hub repo, a directory or a file; see
        `efficient_sam.from_pretrained`. Always strict (`strict=False` is refused)."""
        if not strict:
            raise ValueError(
                "efficient_sam always loads strictly; to load partial weights build the model and call "
                "model.load_state_dict(state_dict, strict=False) yourself"
            )
        if LOADER is None:  # only if efficient_sam.hub was never imported
            raise RuntimeError("import efficient_sam before loading models")
        return LOADER(
            cls,
            pretrained_model_name_or_path,
            filename=filename,
            revision=revision,
            device=device if device is not None else map_location,
            model=model,
            force_download=force_download,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            **overrides,
        )

    def push_to_hub(self, repo_id: str, *args: Any, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        """Upload `save_pretrained`'s files to `repo_id` (the model card names the repo)."""
        card = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, *args, model_card_kwargs=card, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any):
        info = self._model_card_info()
        info.update({k: v for k, v in kwargs.items() if v is not None})
        return super().generate_model_card(*args, **info)

    def _model_card_info(self) -> dict[str, Any]:
        return {"num_params": f"{sum(p.numel() for p in self.parameters()):,}"}  # type: ignore[attr-defined]
