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


VLM_CORPUS = [
    "Is there anything unrealistic in this image? yes or no or somewhat",
    "Yes, the face is distorted and the hands look merged.",
    "No, nothing looks unrealistic.",
    "Somewhat. The lighting on the hat is inconsistent with the fur.",
    "system user assistant System User Assistant",
]
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                "<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>",
                   "<global-img>"]
IDEFICS_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == "
    "'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}"
    "{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _byte_bpe(special: list[str], template: str, **tokens):
    """A ~400-token byte-level BPE trained on a few sentences, wrapped as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(VLM_CORPUS * 5, trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **tokens)
    return fast, {t: fast.convert_tokens_to_ids(t) for t in special}


def _text_config(vocab: int, ids: dict, bos: str, eos: str, **extra) -> dict:
    """2 layers, hidden 128, 4 heads of 32 (head_dim 32: what vLLM's CPU attention accepts)."""
    return dict(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=ids[bos], eos_token_id=ids[eos],
                pad_token_id=ids["<|endoftext|>"], **extra)


def _save_vlm(model, processor, final_norm, folder: Path, eos_id: int, pad_id: int) -> Path:
    with torch.no_grad():
        # With 0.02-std random weights and a unit-gain final RMSNorm, a frozen LM head can only produce
        # logits within about +-2.6, so no adapter could ever push a token's probability past ~4 %
        # (loss floor ~3.35). Pretrained models have no such cap; a larger final-norm gain lifts it here.
        final_norm.weight.fill_(20.0)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_qwen2vl(folder: Path) -> Path:
    """A random 2-layer Qwen2-VL (mrope) with tokenizer, processor and chat template built offline."""
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    folder.mkdir(parents=True, exist_ok=True)
    fast, ids = _byte_bpe(QWEN_SPECIAL, QWEN_TEMPLATE, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    cfg = Qwen2VLConfig(
        text_config=_text_config(len(fast), ids, "<|endoftext|>", "<|im_end|>", rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}),
        vision_config=dict(depth=2, embed_dim=64, hidden_size=128, num_heads=4, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg)
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28),
                                 tokenizer=fast, video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_TEMPLATE)
    return _save_vlm(model, processor, model.model.language_model.norm, folder, ids["<|im_end|>"], ids["<|endoftext|>"])


def build_tiny_idefics3(folder: Path) -> Path:
    """A random tiny Idefics3 (the SmolVLM family: SigLIP-style vision + Llama text), built offline."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    folder.mkdir(parents=True, exist_ok=True)
    fast, ids = _byte_bpe(IDEFICS_SPECIAL, IDEFICS_TEMPLATE, eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
                          bos_token="<|im_start|>", additional_special_tokens=IDEFICS_SPECIAL[2:])
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=64, patch_size=16),
        text_config=_text_config(len(fast), ids, "<|im_start|>", "<end_of_utterance>", model_type="llama"),
        scale_factor=2, image_token_id=ids["<image>"], pad_token_id=ids["<|endoftext|>"])
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(cfg)
    image_processor = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 64},
                                             max_image_size={"longest_edge": 64})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=fast, image_seq_len=4,
                                  chat_template=IDEFICS_TEMPLATE)
    return _save_vlm(model, processor, model.model.text_model.norm, folder, ids["<end_of_utterance>"],
                     ids["<|endoftext|>"])


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


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
