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

RAISE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "raise-train"

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
