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

from describe.tiny import build_tiny_idefics3, build_tiny_qwen2vl, build_tiny_qwen25vl

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


def planted_manifest(folder: Path, n: int, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """`planted_dataset` written as `folder/manifest.csv`; returns its path and the two score terms."""
    import csv

    rows, image_term, text_term = planted_dataset(folder, n, seed)
    with (folder / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["image", "mos", "description"])
        w.writeheader()
        w.writerows(rows)
    return folder / "manifest.csv", image_term, text_term


def held_out_predictions(out: Path, seed: int = 42, fold: int = 0) -> list[float]:
    """The predicted z-scores a CORE training run wrote for its held-out rows."""
    import csv

    rows = list(csv.DictReader((out / f"seed{seed}" / f"fold{fold}" / "predictions.csv").open()))
    return [float(r["pred_z"]) for r in rows]


def _engineer_redness(model) -> None:
    """Weights for which the answer is known: a patch embedding's (and an average-pooled crop
    embedding's) cosine with +e0 grows with how red its pixels are, and every text embeds to +e0.
    Transformer blocks pass tokens through unchanged except the last, whose query-query attention (for
    ClearCLIP) is sharp and value/output maps are identity."""
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


def build_tiny_clip(folder: Path, engineer: str | None = None) -> dict:
    """The package's tiny random CLIP, or with `engineer="redness"` the engineered one."""
    from realness.dream.tiny import build_tiny_clip as build

    if engineer is None:
        return build(folder)
    return build(folder, f"tiny-clip-{engineer}", modify={"redness": _engineer_redness}[engineer])


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> dict:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def redness_clip(tmp_path_factory) -> dict:
    return build_tiny_clip(tmp_path_factory.mktemp("redness-clip"), engineer="redness")


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="session")
def tiny_qwen25vl(tmp_path_factory) -> Path:
    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny-qwen25vl"))


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory) -> Path:
    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"))


DESCRIBER_PAIRS = [
    ((220, 30, 30), "Yes, the face is distorted."),
    ((30, 200, 40), "No, nothing looks unrealistic."),
    ((30, 40, 220), "Somewhat. The hat looks merged with the fur."),
    ((240, 240, 240), "Yes, the hands look merged and the lighting is inconsistent."),
]


def colour_image(colour, seed: int = 0) -> Image.Image:
    """A 56x56 image of one colour with a little noise."""
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(colour)[None, None] + rng.integers(-10, 11, (56, 56, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


@pytest.fixture(scope="session")
def pairs_manifest(tmp_path_factory) -> Path:
    """Four (image, description) pairs a describer must learn to tell apart by colour."""
    import csv

    d = tmp_path_factory.mktemp("pairs")
    with (d / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "description", "source"])
        for i, (colour, text) in enumerate(DESCRIBER_PAIRS):
            colour_image(colour).save(d / f"p{i}.png")
            w.writerow([f"p{i}.png", text, "gpt"])
    return d / "manifest.csv"
