"""The paper's CORE at real size with random weights: ResNet-50 + bert-base-uncased from their configurations.

Speed and memory do not depend on the weights' values. ResNet-50 is torchvision's architecture (no
weights); BERT comes from `configs/bert-base-uncased.json` (the published config, copied into this
repository) with a WordPiece tokenizer of the real vocabulary size (30,522 entries: the five special
tokens, then generated words), so nothing is downloaded.

    paper_core_random(folder)   a CoreModel of the `paper` preset; its text encoder saved under `folder`
"""

from __future__ import annotations

from pathlib import Path

import torch

from realness.core import create_core

BERT_CONFIG = Path(__file__).parent / "configs" / "bert-base-uncased.json"
# Published sizes: torchvision ResNet-50 25,557,032 (23,508,032 without its classifier, which CORE drops);
# bert-base-uncased 110M (BertModel with pooler: 109,482,240).
PUBLISHED_PARAMETERS = {"image_backbone": 23_508_032, "text_encoder": 109_482_240}


def bert_base_shape(folder: str | Path) -> Path:
    """Save a random BertModel from the published config and a 30,522-token tokenizer into `folder`."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = BertConfig.from_json_file(str(BERT_CONFIG))
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = special + [f"w{i}" for i in range(config.vocab_size - len(special))]
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True).save_pretrained(folder)
    return folder


def paper_core_random(folder: str | Path, **overrides):
    """The `paper` preset (ResNet-50 + bert-base-uncased, 2816 -> 529 -> 1 head) with random weights."""

    text = bert_base_shape(Path(folder) / "bert-base-uncased-shape")
    torch.manual_seed(0)
    return create_core("paper", pretrained=False, pretrained_text=True, text_encoder=str(text), **overrides)
