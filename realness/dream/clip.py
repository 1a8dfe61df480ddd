"""CLIP through open_clip: loading, text embeddings, pooled crop embeddings and dense patch embeddings.

Dense patch embeddings: CLIP's patch tokens at the last layer are noisy and barely aligned with text,
because the last block's query-key attention mixes in global context and its residual path carries
the pre-attention token. Training-free fixes replace the last block:
- `clearclip` (default): ClearCLIP (Lan et al., ECCV 2024): query-query self-attention, with the last
  block's residual connection and feed-forward network removed;
- `maskclip`: MaskCLIP (Zhou et al., ECCV 2022): each token's value embedding alone (no attention
  mixing), through the output projection, without residual or feed-forward;
- `none`: the unmodified last block.
The result then goes through `ln_post` and the visual projection into the joint text-image space.
Positional embeddings are interpolated (bicubic) for inputs larger than the training size, so a
448x336 input gives a 14x10 grid from ViT-B/32 instead of 7x7.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from realness.dream.configuration import DENSE_FIXES  # one list of the fixes


def load_clip(model: str = "ViT-B-32", pretrained: str | None = "openai", config_dir: str | None = None,
              device: str = "cpu"):
    """`(model, tokenizer)` from open_clip. `pretrained`: a tag ("openai") or a local weights file.

    `config_dir` registers custom architecture JSON files first (`open_clip.add_model_config`).
    """
    try:
        import open_clip
    except ImportError as err:
        raise ImportError("DREAM needs open_clip: pip install 'realness[dream]'") from err
    if config_dir:
        open_clip.add_model_config(Path(config_dir))
    clip = open_clip.create_model(model, pretrained=pretrained or None, device=device)
    clip.eval()
    return clip, open_clip.get_tokenizer(model)


def image_stats(clip) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation mean and std the model was trained with, shaped (3, 1, 1)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = getattr(clip.visual, "image_mean", None) or OPENAI_DATASET_MEAN
    std = getattr(clip.visual, "image_std", None) or OPENAI_DATASET_STD
    return torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)


@torch.no_grad()
def encode_texts(clip, tokenizer, texts: list[str]) -> torch.Tensor:
    """L2-normalised text embeddings (T, D)."""
    device = next(clip.parameters()).device
    return F.normalize(clip.encode_text(tokenizer(texts).to(device)).float(), dim=-1)


@torch.no_grad()
def encode_crops(clip, pixels: torch.Tensor) -> torch.Tensor:
    """L2-normalised pooled image embeddings (B, D) of crops already at the model's input size."""
    return F.normalize(clip.encode_image(pixels).float(), dim=-1)


def _grid_positions(pos: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """Positional embeddings (1 + gh*gw, C) for a gh x gw grid, interpolated from the trained grid."""
    cls, grid = pos[:1], pos[1:]
    n = int(round(math.sqrt(grid.shape[0])))
    if (gh, gw) == (n, n):
        return pos
    grid = grid.reshape(1, n, n, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(gh, gw), mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)])


def _last_block(block, x: torch.Tensor, fix: str) -> torch.Tensor:
    if fix == "none":
        return block(x)
    attn = block.attn
    if not isinstance(attn, torch.nn.MultiheadAttention):
        raise NotImplementedError(f"dense fix {fix!r} supports nn.MultiheadAttention blocks, not {type(attn).__name__}")
    b, n, c = x.shape
    heads = attn.num_heads
    q, _, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, v = (t.reshape(b, n, heads, c // heads).transpose(1, 2) for t in (q, v))
    if fix == "clearclip":
        out = F.scaled_dot_product_attention(q, q, v)  # query-query attention
    else:  # maskclip: every token keeps its own value
        out = v
    out = attn.out_proj(out.transpose(1, 2).reshape(b, n, c))
    return block.ls_1(out) if hasattr(block, "ls_1") else out  # no residual, no feed-forward


@torch.no_grad()
def dense_embeddings(clip, pixels: torch.Tensor, fix: str = "clearclip") -> torch.Tensor:
    """L2-normalised per-patch embeddings in text space, (B, gh, gw, D), for inputs of any size that
    is a multiple of the patch size."""
    if fix not in DENSE_FIXES:
        raise ValueError(f"fix must be one of {DENSE_FIXES}, got {fix!r}")
    visual = clip.visual
    if getattr(visual, "attn_pool", None) is not None or not hasattr(visual, "conv1"):
        raise NotImplementedError("dense maps need a plain open_clip VisionTransformer")
    x = visual.conv1(pixels.to(visual.conv1.weight.dtype))
    b, c, gh, gw = x.shape
    x = x.reshape(b, c, gh * gw).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).expand(b, 1, c)
    x = torch.cat([cls, x], dim=1) + _grid_positions(visual.positional_embedding, gh, gw).to(x.dtype)
    x = visual.ln_pre(x)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        x = block(x)
    x = visual.ln_post(_last_block(blocks[-1], x, fix))
    tokens = x[:, 1:] @ visual.proj if visual.proj is not None else x[:, 1:]
    return F.normalize(tokens.float(), dim=-1).reshape(b, gh, gw, -1)
