"""Load a base VLM (bf16/fp32 or 4-bit NF4) and attach LoRA adapters that vLLM can serve.

LoRA goes on the language model's attention and MLP projections by default (optionally the vision
tower too). No `modules_to_save`: vLLM refuses or silently ignores adapters that carry full copies of
modules, so the embeddings and LM head stay frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from describe.small import resolve_describer

LANGUAGE_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Qwen2-VL: attn.qkv/proj, mlp.fc1/fc2; Qwen2.5-VL: attn.qkv/proj, gated mlp.gate_proj/up_proj/down_proj;
# SigLIP/Idefics3: q/k/v/out_proj, fc1/fc2.
VISION_PROJECTIONS = ("qkv", "proj", "fc1", "fc2", "gate_proj", "up_proj", "down_proj", "q_proj", "k_proj", "v_proj",
                      "out_proj")


@dataclass
class LoraSettings:
    """LoRA hyper-parameters."""

    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    language_modules: tuple[str, ...] = field(default=LANGUAGE_PROJECTIONS, metadata={"help": "Language-model "
                                                                                              "projections that get "
                                                                                              "LoRA."})
    vision: bool = field(default=False, metadata={"help": "Also put LoRA on the vision tower's projections."})


def target_modules_regex(settings: LoraSettings) -> str:
    """A PEFT `target_modules` regex restricted to the language model (and the vision tower if asked)."""
    lang = "|".join(settings.language_modules)
    pattern = rf".*(?:language_model|text_model)\..*\.(?:{lang})"
    if settings.vision:
        pattern += rf"|.*(?:visual|vision_model|vision_tower)\..*\.(?:{'|'.join(VISION_PROJECTIONS)})"
    return pattern


# What QLoRA leaves unquantised: the vision tower and its projector (as the common Qwen-VL QLoRA recipes keep the ViT
# in bf16: an adapter trained on NF4 vision features would be served on the bf16 tower) and the output layer. Names
# as transformers 5 nests them under `model.` and as 4.x had them at the top; listing any skip module replaces
# transformers' own defaults, so `lm_head` is named too.
QLORA_SKIP_MODULES = ("lm_head", "model.visual", "visual", "model.vision_model", "model.vision_tower",
                      "vision_tower", "model.multi_modal_projector", "multi_modal_projector", "model.connector")


def quantization_config(compute_dtype: torch.dtype = torch.bfloat16):
    """QLoRA's 4-bit NF4 with double quantisation and bf16 compute, the language model alone quantised
    (`QLORA_SKIP_MODULES` stay in `compute_dtype`)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=list(QLORA_SKIP_MODULES))


def load_base(model_id: str, quantize_4bit: bool = False, dtype: str = "auto", device_map=None,
              attn_implementation: str | None = None):
    """`(model, processor)` for an image-text-to-text model id or folder."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_id, _ = resolve_describer(model_id)  # bundled names; registers the small describer's classes
    torch_dtype = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    kwargs = {"dtype": torch_dtype}
    if quantize_4bit:
        compute = torch.bfloat16 if torch_dtype in ("auto", torch.bfloat16) else torch_dtype
        kwargs["quantization_config"] = quantization_config(compute)
        kwargs["dtype"] = compute  # what is not quantised (embeddings, norms, vision tower) stays in bf16
        kwargs["device_map"] = device_map or ("cuda" if torch.cuda.is_available() else "cpu")
    elif device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(model_id, **kwargs)
    processor = AutoProcessor.from_pretrained(model_id)
    return model, processor


def prepare_kbit(model, gradient_checkpointing: bool = False):
    """`peft.prepare_model_for_kbit_training` without its float32 casts: every weight frozen, gradient
    checkpointing and input gradients as asked, but what is not quantised keeps its bf16. PEFT's version
    casts it all to float32, which for Qwen2.5-VL-3B is a 311M-parameter embedding at 1.16 GiB, more than
    the 4-bit language model itself; LoRA's own weights are float32 either way (PEFT creates them so)."""
    for param in model.parameters():
        param.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def add_lora(model, settings: LoraSettings | None = None, gradient_checkpointing: bool = False,
             kbit_upcast: bool = False):
    """Wrap `model` in a PEFT LoRA model (after k-bit preparation when it is quantised: `prepare_kbit`, or with
    `kbit_upcast` PEFT's own, which casts every non-quantised weight to float32)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    settings = settings or LoraSettings()
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_quantized", False):
        model = (prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                 gradient_checkpointing_kwargs={"use_reentrant": False})
                 if kbit_upcast else prepare_kbit(model, gradient_checkpointing))
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    # Modules a model trains in full beside LoRA (the small describer's new projector); none for
    # pretrained VLMs, whose adapters must stay pure LoRA for vLLM.
    trainable = list(getattr(model, "trainable_modules", ())) or None
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=target_modules_regex(settings), bias="none", task_type="CAUSAL_LM",
                        modules_to_save=trainable)
    return get_peft_model(model, config)
