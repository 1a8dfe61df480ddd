"""A tiny random CLIP built offline from a config: DREAM's test variant and its offline placeholder.

No pretrained CLIP ships on PyPI, so on a machine without network access DREAM can only run on random
weights. `realness run` falls back to this model only when the default CLIP cannot be loaded, and says
that its maps mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16, "pool_type": "avg"},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_tiny_clip(folder: str | Path, name: str = "tiny-clip-random", modify: Callable | None = None) -> dict:
    """Save a seeded tiny open_clip model as config JSON + safetensors; returns the `DreamConfig` overrides
    (`model`, `pretrained`, `model_config_dir`) that load it. `modify(model)` may set weights first."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    if modify is not None:
        with torch.no_grad():
            modify(model)
    weights = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {"model": name, "pretrained": str(weights), "model_config_dir": str(folder)}


def tiny_clip() -> dict:
    """`build_tiny_clip` into the cache folder (once); the `DreamConfig` overrides that load it."""
    from describe.tiny import cache_dir

    folder = cache_dir() / "tiny-clip"
    weights = folder / "tiny-clip-random.safetensors"
    if weights.is_file():
        return {"model": "tiny-clip-random", "pretrained": str(weights), "model_config_dir": str(folder)}
    return build_tiny_clip(folder)
