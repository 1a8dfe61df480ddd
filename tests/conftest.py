"""Shared fixtures: offline mode, tiny models built from configs, small synthetic image sets."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

RAISE_DIR = Path(os.environ.get("REALNESS_RAISE_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "raise-train")

WORDS = (
    "yes no somewhat the a an and of is are in on with to looks look seems image face hand hands hat dog "
    "fur sky tree trees people person cat car road water light shadow shadows texture edges edge smooth "
    "blurry distorted unnatural natural realistic unrealistic artificial odd strange warped merged fingers "
    "eyes background foreground object objects transition between perspective proportions lighting glossy "
    "plastic everything fine photo normal clean sharp red blue green bright dark"
).split()


def build_tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide random BERT with a word-level WordPiece tokenizer, saved like a hub model."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", ";", "'", "s"] + sorted(set(WORDS))
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_core_kwargs(tiny_bert) -> dict:
    """`CoreConfig` overrides for a tiny CORE: timm's registered test_resnet + the tiny BERT, 64x64 input."""
    return {
        "image_backbone": "timm/test_resnet",
        "text_encoder": str(tiny_bert),
        "image_size": (64, 64),
        "head_hidden": 32,
    }


def planted_dataset(folder: Path, n: int, seed: int = 0) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Images whose brightness and descriptions whose key word each carry half of the score.

    score = brightness_term + text_term with independent terms: bright images and descriptions
    saying "natural" score high, dark images and "distorted" ones low.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    image_term = rng.uniform(-1, 1, n)
    text_term = rng.choice([-1.0, 1.0], n)
    rows = []
    for i in range(n):
        level = int(127 + 100 * image_term[i])
        noise = rng.integers(-20, 21, (48, 48, 3))
        pixels = np.clip(level + noise, 0, 255).astype(np.uint8)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(pixels).save(path)
        filler = " ".join(rng.choice(["the", "image", "photo", "looks", "fur", "sky", "tree"], 4))
        word = "natural" if text_term[i] > 0 else "distorted"
        rows.append({"image": path.name, "mos": 50 + 20 * (image_term[i] + text_term[i]),
                     "description": f"{filler} {word} {filler}"})
    return rows, image_term, text_term


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16, "pool_type": "avg"},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_tiny_clip(folder: Path, engineer: str | None = None) -> dict:
    """A tiny open_clip model saved as config JSON + safetensors; returns `DreamConfig` overrides.

    `engineer="redness"` sets the weights so the answer is known: a patch embedding's (and an
    average-pooled crop embedding's) cosine with +e0 grows with how red its pixels are, and every text
    embeds to +e0. Transformer blocks pass tokens through unchanged except
    the last, whose query-query attention (for ClearCLIP) is sharp and value/output maps are identity.
    """
    import json

    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    name = f"tiny-clip-{engineer or 'random'}"
    (folder / f"{name}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    if engineer == "redness":
        v, t = model.visual, model.transformer
        with torch.no_grad():
            v.conv1.weight.zero_()
            v.conv1.weight[0, 0] = 1.0 / 256
            v.conv1.weight[0, 1:] = -0.5 / 256
            v.class_embedding.zero_()
            # A constant second component keeps the embedding graded (LayerNorm of a lone redness
            # value would only keep its sign): cos(token, e0) ~ redness / sqrt(redness^2 + 1).
            v.positional_embedding.zero_()
            v.positional_embedding[:, 1] = 1.0
            blocks = list(v.transformer.resblocks)
            for block in blocks:
                block.mlp.c_proj.weight.zero_()
                block.mlp.c_proj.bias.zero_()
                block.attn.out_proj.weight.zero_()
                block.attn.out_proj.bias.zero_()
                block.attn.in_proj_bias.zero_()
            last = blocks[-1].attn
            width = v.conv1.out_channels
            last.in_proj_weight.zero_()
            last.in_proj_weight[:width] = 8 * torch.eye(width)          # q: sharp query-query attention
            last.in_proj_weight[2 * width:] = torch.eye(width)          # v: identity
            last.out_proj.weight.copy_(torch.eye(width))                # output projection: identity
            for ln in (v.ln_pre, v.ln_post, blocks[-1].ln_1):
                ln.weight.fill_(1.0)
                ln.bias.zero_()
            v.proj.zero_()
            v.proj[0, 0] = 1.0
            v.proj[1, 1] = 1.0
            # Text: blocks pass through, every text's end token embeds to +e0.
            for block in t.resblocks:
                block.mlp.c_proj.weight.zero_()
                block.mlp.c_proj.bias.zero_()
                block.attn.out_proj.weight.zero_()
                block.attn.out_proj.bias.zero_()
            model.token_embedding.weight.zero_()
            model.token_embedding.weight[:, 0] = 1.0
            model.positional_embedding.zero_()
            model.ln_final.weight.fill_(1.0)
            model.ln_final.bias.zero_()
            model.text_projection.zero_()
            model.text_projection[0, 0] = 1.0
    weights = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {"model": name, "pretrained": str(weights), "model_config_dir": str(folder)}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> dict:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def redness_clip(tmp_path_factory) -> dict:
    return build_tiny_clip(tmp_path_factory.mktemp("redness-clip"), engineer="redness")
