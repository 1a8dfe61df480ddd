"""A tiny random CLIP built offline from a config: DREAM's CLIP test variant.

No pretrained CLIP ships on PyPI, so the tests run DREAM's CLIP code on this model (and on copies with
engineered weights). Offline runs no longer use it: without CLIP, maps come from the evidence
(`realness.dream.evidence`), real weights that ship.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

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
