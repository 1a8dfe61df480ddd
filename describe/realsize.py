"""Real-size random models built from published configurations: the speed and memory of the real ones.

No weights can be downloaded here, but a model's speed and memory depend on its shapes, not on its
weights' values: a model built from the published `config.json` with random weights runs the same
kernels on the same shapes. The configurations live in this repository (`describe/configs/`,
`realness/core/configs/`), copied from the published model cards; nothing is fetched.

    build_realsize("qwen2.5-vl-3b", folder)   Qwen2.5-VL-3B-Instruct (the default describer), bf16, saved
                                              with `save_pretrained` with a processor and a byte-level BPE
                                              tokenizer of the real vocabulary size (151,665 tokens, the
                                              special tokens at their published ids)
    count_parameters("qwen2.5-vl-3b")         parameters of the model a config builds (on the meta device)
    benchmark_model(spec)                     what benchmarks take: `realsize:<name>` built once into
                                              eval/out/realsize/<name>, None for the tiny test Qwen2-VL
    PUBLISHED_PARAMETERS                      the sizes the model cards give, for the tests

The paper's CORE (ResNet-50 + bert-base-uncased) at real size is `realness.core.realsize`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from describe.tiny import QWEN_TEMPLATE, build_tiny_qwen2vl

CONFIGS = Path(__file__).parent / "configs"
REALSIZE = {"qwen2.5-vl-3b": CONFIGS / "qwen2.5-vl-3b-instruct"}
# Model cards: Qwen/Qwen2.5-VL-3B-Instruct "3.75B params" (safetensors: 3,754,622,976).
PUBLISHED_PARAMETERS = {"qwen2.5-vl-3b": 3_754_622_976}

QWEN25_REGULAR_TOKENS = 151_643  # byte-level BPE entries before the first special token
QWEN25_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]


SHALLOW = "-shallow"  # real widths and vocabulary, 4 language layers and 4 vision blocks: what 2 CPU cores can train


def _config(name: str):
    """The published configuration of `name`; `<name>-shallow` keeps its widths, vocabulary and embeddings
    (what the QLoRA memory work is about) with 4 of its language layers and 4 of its vision blocks."""
    from transformers import AutoConfig

    base = name.removesuffix(SHALLOW)
    if base not in REALSIZE:
        raise ValueError(f"unknown real-size model {name!r}; choose from {sorted(REALSIZE)} (or NAME{SHALLOW})")
    config = AutoConfig.from_pretrained(REALSIZE[base])
    if name.endswith(SHALLOW):
        text = getattr(config, "text_config", config)
        text.num_hidden_layers = 4
        if hasattr(text, "layer_types") and text.layer_types:
            text.layer_types = text.layer_types[:4]
        config.vision_config.depth = 4
        config.vision_config.fullatt_block_indexes = [3]
    return config


def _model_class(config):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText._model_mapping[type(config)]


def count_parameters(name: str) -> int:
    """Parameters of the model the published configuration builds (built on the meta device: instant)."""
    config = _config(name)
    with torch.device("meta"):
        model = _model_class(config)._from_config(config)
    return sum(p.numel() for p in model.parameters())


def qwen25_tokenizer(template: str):
    """A byte-level BPE with Qwen2.5's vocabulary size and special-token ids.

    Its merges are synthetic (every byte pair, then byte triples, until 151,643 entries), so text
    tokenizes into about two bytes per token instead of Qwen's four: the shapes and the cost of a
    decoding step (embedding and LM head over 151,936 rows) are the real ones.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = []
    for a in alphabet:
        for b in alphabet:
            vocab[a + b] = len(vocab)
            merges.append((a, b))
    pairs = list(vocab)[len(alphabet):]
    for ab in pairs:
        for c in alphabet:
            if len(vocab) == QWEN25_REGULAR_TOKENS:
                break
            vocab[ab + c] = len(vocab)
            merges.append((ab, c))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(QWEN25_SPECIAL)
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")


def build_realsize(name: str, folder: str | Path, dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> Path:
    """Build `name` with random weights on `device` and save it with its processor to `folder`.

    Weights come from the model class's own initialisation, seeded, in `dtype`.
    """
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    config = _config(name)
    tokenizer = qwen25_tokenizer(QWEN_TEMPLATE)
    pre = json.loads((REALSIZE[name.removesuffix(SHALLOW)] / "preprocessor_config.json").read_text())
    image_processor = Qwen2VLImageProcessor(min_pixels=pre["min_pixels"], max_pixels=pre["max_pixels"],
                                            patch_size=pre["patch_size"], merge_size=pre["merge_size"],
                                            temporal_patch_size=pre["temporal_patch_size"],
                                            image_mean=pre["image_mean"], image_std=pre["image_std"])
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_TEMPLATE)
    torch.manual_seed(0)
    with torch.device(device):  # the models' own initialisation (N(0, 0.02)), straight into `dtype`
        model = _model_class(config)._from_config(config, dtype=dtype)
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def benchmark_model(spec: str | None, device: str | None = None) -> str:
    """A model folder or hub id for a benchmark's `--model`: `realsize:<name>` is built once (on `device`,
    default cuda when present) into `eval/out/realsize/<name>`; None is the tiny test Qwen2-VL."""
    if spec is None:
        folder = Path("eval/out/tiny-qwen2vl")
        return str(folder if (folder / "config.json").is_file() else build_tiny_qwen2vl(folder))
    if spec.startswith("realsize:"):
        name = spec.split(":", 1)[1]
        folder = Path("eval/out/realsize") / name
        if not (folder / "config.json").is_file():
            build_realsize(name, folder, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return str(folder)
    return spec
