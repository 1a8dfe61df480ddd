"""Tiny random VLMs built offline from configs: the describer's test variants, and its offline placeholder.

No pretrained generative VLM can be downloaded on a machine without network access, and none ships on
PyPI. These 2-layer models (a ~400-token byte-level BPE trained on a few sentences, a real processor and
chat template) run the real transformers, PEFT and vLLM code paths. Their text is random until trained:
`realness run` falls back to `tiny-qwen2vl` only when the default describer cannot be loaded, and says so.

    build_tiny_qwen2vl(folder)    Qwen2-VL architecture (mrope), what vLLM serves in the tests
    build_tiny_qwen25vl(folder)   Qwen2.5-VL, the default describer's family: window attention and a gated
                                  MLP in the vision tower (other LoRA target names than Qwen2-VL's)
    build_tiny_idefics3(folder)   Idefics3, the SmolVLM family
    tiny_describer()              `tiny-qwen2vl` built once into the cache folder, returned as a path
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

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


def _build_tiny_qwen(folder: Path, config_cls, model_cls, processor_cls, vision_config: dict) -> Path:
    """A random 2-layer model of a Qwen-VL family (mrope text model) with tokenizer, processor and template."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    folder.mkdir(parents=True, exist_ok=True)
    fast, ids = _byte_bpe(QWEN_SPECIAL, QWEN_TEMPLATE, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    cfg = config_cls(
        text_config=_text_config(len(fast), ids, "<|endoftext|>", "<|im_end|>", rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}),
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    torch.manual_seed(0)
    model = model_cls(cfg)
    processor = processor_cls(image_processor=Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28),
                              tokenizer=fast, video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_TEMPLATE)
    return _save_vlm(model, processor, model.model.language_model.norm, folder, ids["<|im_end|>"], ids["<|endoftext|>"])


def build_tiny_qwen2vl(folder: Path) -> Path:
    """A random 2-layer Qwen2-VL (mrope) with tokenizer, processor and chat template built offline."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    return _build_tiny_qwen(folder, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, dict(
        depth=2, embed_dim=64, hidden_size=128, num_heads=4, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
        temporal_patch_size=2, in_chans=3))


def build_tiny_qwen25vl(folder: Path) -> Path:
    """A random 2-layer Qwen2.5-VL: block 0 of its vision tower attends within 56-pixel windows, block 1
    over the whole image (as the 3B model's `fullatt_block_indexes`), and its vision MLP is gated."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    return _build_tiny_qwen(folder, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, dict(
        depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128, patch_size=14,
        spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1], in_channels=3))


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


TINY = {"tiny-qwen2vl": build_tiny_qwen2vl, "tiny-qwen25vl": build_tiny_qwen25vl, "tiny-idefics3": build_tiny_idefics3}


def cache_dir() -> Path:
    """Where built placeholder models live: `$REALNESS_CACHE`, else `$XDG_CACHE_HOME/realness`, else ~/.cache/realness."""
    root = os.environ.get("REALNESS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "realness"
    return Path(root)


def tiny_describer(name: str = "tiny-qwen2vl") -> Path:
    """The folder of tiny VLM `name`, built (seeded, so always the same weights) on first use."""
    if name not in TINY:
        raise ValueError(f"unknown tiny VLM {name!r}; choose from {sorted(TINY)}")
    folder = cache_dir() / name
    if not (folder / "config.json").is_file():
        import shutil

        tmp = folder.with_name(f"{name}.tmp{os.getpid()}")
        TINY[name](tmp)
        if folder.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(folder)
    return folder
