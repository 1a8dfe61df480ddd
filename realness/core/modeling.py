"""The CORE model: pooled image features and pooled description features, concatenated, into an MLP head.

Saved as a folder: `config.json` (a `CoreConfig`), `model.safetensors`, and `text_encoder/` (the text
encoder's config and tokenizer), so `CoreModel.from_pretrained(folder)` rebuilds everything offline and
never unpickles anything.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from realness.core.backbones import build_image_backbone, build_text_encoder, image_stages
from realness.core.configuration import PRESETS, CoreConfig
from realness.core.loading import predict_stream
from realness.core.novelty import Novelty
from realness.core.processing import CoreProcessor
from realness.registry import BUNDLED_CORE

# Models that ship inside the package, loadable by name: `CoreModel.from_pretrained("offline")`.
# `offline-image`: the same recipe without text, the score a user gets with no describer (the gate's floor);
# `offline-audit`: a second opinion for `realness reward-audit` (EfficientNet-Lite2, other seeds), never a reward.
BUNDLED = BUNDLED_CORE


def resolve_core(name: str | Path) -> Path:
    """The folder of a saved CORE model: a local folder wins only when it holds one (so a folder that
    happens to be called `offline` in the working directory does not hide the bundled model)."""
    path = Path(name)
    if (path / CONFIG_NAME).is_file():
        return path
    if str(name) in BUNDLED:
        return BUNDLED[str(name)]
    if path.exists():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; not a saved CORE model (bundled: {', '.join(BUNDLED)})")
    raise FileNotFoundError(f"{name}: no such folder and no bundled CORE model of that name (bundled: {', '.join(BUNDLED)})")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TEXT_DIR = "text_encoder"


class CoreModel(nn.Module):
    """Predicts the z-scored realness opinion score of an image from the image and/or its description."""

    def __init__(
        self,
        config: CoreConfig,
        pretrained: bool = True,
        pretrained_text: bool | None = None,
        _text_config_dir: str | None = None,
    ):
        """Build the branches `config` asks for.

        Args:
            pretrained: load the backbones' pretrained weights (else random init).
            pretrained_text: override `pretrained` for the text encoder alone, e.g. a local text
                encoder with a randomly initialised image backbone.
        """
        super().__init__()
        pretrained_text = pretrained if pretrained_text is None else pretrained_text
        self.config = config
        self.image_backbone, self.text_encoder, self.tokenizer = None, None, None
        width = 0
        if config.uses_image:
            self.image_backbone, image_dim = build_image_backbone(config.image_backbone, pretrained,
                                                                  config.image_levels, config.image_pooling)
            width += image_dim
        if config.uses_text:
            self.text_encoder, self.tokenizer = build_text_encoder(
                config.text_encoder, config.text_pooling, pretrained_text, _text_config_dir
            )
            width += self.text_encoder.dim
        self.head = CoreHead(width, config.head_hidden, config.dropout, config.n_heads, config.standardize_features)
        self.novelty = None
        if config.novelty_rows and config.uses_image:
            self.novelty = Novelty(config.novelty_rows, image_dim, config.novelty_components)
        for module, frozen in ((self.image_backbone, config.freeze_image), (self.text_encoder, config.freeze_text)):
            if module is not None and frozen:
                module.requires_grad_(False)
        if config.image_stages_train:  # after freezing: the top stages train
            for stage in image_stages(self.image_backbone)[0][-config.train_image_stages:]:
                stage.requires_grad_(True)
        if config.text_lora:  # after freezing: the adapter is what trains
            self.text_encoder.add_lora(config.text_lora_rank, config.text_lora_alpha, config.text_lora_layers)
        self.processor = CoreProcessor(config, self.tokenizer)

    def train(self, mode: bool = True) -> CoreModel:
        super().train(mode)
        # A frozen backbone stays in eval mode: its batch-norm statistics and dropout stay fixed too.
        if self.image_backbone is not None and self.config.freeze_image:
            self.image_backbone.eval()
        if self.text_encoder is not None and self.config.freeze_text:
            self.text_encoder.eval()
        return self

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        per_head: bool = False,
    ) -> torch.Tensor:
        """Predicted z-scores, shape (B,), or (B, n_heads) with `per_head`; `features` (from
        `features()`, (B, D), or (B, 2, D) for an image and its mirror image) skips the backbones."""
        if features is None:
            features = self.features(pixel_values, input_ids, attention_mask)
        return self.head_outputs(features) if per_head else self.score_features(features)

    def features(self, pixel_values=None, input_ids=None, attention_mask=None) -> torch.Tensor:
        """The concatenated pooled features the head reads: image first, then text; (B, D), or with
        `flip_tta` (B, 2, D), the second row of each image from its mirror image."""
        image = text = None
        if self.image_backbone is not None:
            image = self.image_features(pixel_values)
            if self.config.flip_tta:
                image = torch.stack([image, self.image_features(pixel_values.flip(-1))], dim=1)
        if self.text_encoder is not None:
            text = self.text_encoder(input_ids, attention_mask).float()
        return join_features(image, text)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled image features (B, Di); several views of each image (B, V, 3, H, W) are averaged."""
        if pixel_values.dim() == 5:
            b, v = pixel_values.shape[:2]
            return self.image_backbone(pixel_values.flatten(0, 1)).float().view(b, v, -1).mean(1)
        return self.image_backbone(pixel_values).float()

    def set_novelty(self, image_features: torch.Tensor, components: int | None = None) -> None:
        """Keep the training images' image features (N, Di) so every score can say how unlike them an image is."""
        components = components or self.config.novelty_components
        self.novelty = Novelty.fit(image_features, components)
        self.config.novelty_rows, self.config.novelty_components = len(image_features), self.novelty.basis.shape[1]

    def score_and_novelty(self, pixel_values=None, input_ids=None, attention_mask=None) -> torch.Tensor:
        """(B, 2): the z-score and the novelty percentile (0-100; NaN when the model keeps no training features)."""
        features = self.features(pixel_values, input_ids, attention_mask)
        z = self.score_features(features)
        if self.novelty is None:
            return torch.stack([z, torch.full_like(z, float("nan"))], dim=1)
        image = features[..., :self.novelty.mean.shape[0]]
        return torch.stack([z, self.novelty(image).to(z)], dim=1)

    def novelty_report(self, novelty: float) -> tuple[float | None, str]:
        """A `score_and_novelty` percentile as scores carry it: rounded to 0.1 (None when the model keeps no training
        features, NaN), beside the plain warning it calls for ("" when none)."""
        if novelty != novelty:  # NaN: no training features kept
            return None, ""
        novelty = round(float(novelty), 1)
        return novelty, self.novelty_warning(novelty)

    def novelty_warning(self, novelty: float | None) -> str:
        """The plain warning a score carries when its image is unlike the images the model learned from ("" when
        it is not, or when the model keeps no training features)."""
        if novelty is None or self.novelty is None or novelty < self.novelty.warn_at:
            return ""
        return (f"unlike the images this model learned from (novelty {novelty:.0f} of 100: further from them than "
                f"{min(novelty, 100.0):.0f} % of its training images are from the rest); the score may not hold")

    def head_outputs(self, features: torch.Tensor) -> torch.Tensor:
        """Every head's z-scores, (B, n_heads); views of one image (B, 2, D) are averaged."""
        out = self.head(features)
        return out.mean(1) if out.dim() == 3 else out

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """The head alone: features (B, D) or (B, 2, D) to z-scores (B,), the mean of its members."""
        return self.head_outputs(features).mean(-1)

    def to_mos(self, z: torch.Tensor | float):
        """Map predicted z-scores back to the training MOS scale (None when that scale is unknown)."""
        c = self.config
        if c.mos_mean is None or c.mos_std is None:
            return None
        mos = z * c.mos_std + c.mos_mean
        if c.mos_range is not None:
            mos = mos.clamp(*c.mos_range) if torch.is_tensor(mos) else min(max(mos, c.mos_range[0]), c.mos_range[1])
        return mos

    def predict(self, images=None, descriptions=None, batch_size: int = 16, num_workers: int = 0,
                with_novelty: bool = False) -> torch.Tensor:
        """Z-scores for images (PIL images or file paths) and/or description strings, in batches, without
        augmentation. `num_workers` DataLoader workers prepare the batches while the model runs
        (`realness.core.loading`); the scores do not depend on it. Raises ValueError for an input that
        cannot be used (`realness.core.loading.predict_stream` yields those instead, per item). With
        `with_novelty`, (N, 2): each z-score beside its novelty percentile (`score_and_novelty`)."""
        return self._batched(self.score_and_novelty if with_novelty else self, images, descriptions, batch_size,
                             num_workers)

    def predict_features(self, images=None, descriptions=None, batch_size: int = 16, num_workers: int = 0) -> torch.Tensor:
        """The head's input features (`features()`) for images and/or description strings, in batches."""
        return self._batched(self.features, images, descriptions, batch_size, num_workers)

    def _batched(self, fn, images, descriptions, batch_size: int, num_workers: int) -> torch.Tensor:
        if self.config.uses_text and descriptions is not None:
            empty = [i for i, d in enumerate(descriptions) if not str(d).strip()]
            if empty:
                raise ValueError(f"empty description at batch position(s) {empty}")
        out = []
        for _, value in predict_stream(self, images, descriptions, batch_size, num_workers, fn=fn):
            if isinstance(value, str):
                raise ValueError(value)
            out.append(torch.as_tensor(value, dtype=torch.float32))
        return torch.stack(out) if out else torch.empty(0)

    def save_pretrained(self, folder: str | Path, include_frozen: bool = True, dtype: torch.dtype | None = None) -> None:
        """Write config, safetensors weights and the text encoder's config + tokenizer.

        `include_frozen=False` leaves out frozen pretrained backbones (rebuilt from their source on load)
        except what trained in them (top image stages, text adapters), which turns a few hundred MB into
        the head's few MB. `dtype` (e.g. `torch.float16`) stores floating-point weights in that type, half
        the size again; loading casts them back to the model's float32.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / CONFIG_NAME)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if not include_frozen:
            frozen_parts = (("image_backbone.", self.config.freeze_image), ("text_encoder.", self.config.freeze_text))
            skip = [p for p, frozen in frozen_parts if frozen]
            trained = {n for n, p in self.named_parameters() if p.requires_grad}  # top stages, adapters
            state = {k: v for k, v in state.items() if not k.startswith(tuple(skip)) or k in trained}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "include_frozen": str(include_frozen)})
        if self.text_encoder is not None:
            self.text_encoder.model.config.save_pretrained(folder / TEXT_DIR)
            self.tokenizer.save_pretrained(folder / TEXT_DIR)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> CoreModel:
        """Load a folder written by `save_pretrained`, or a bundled model by name (`"offline"`).

        No network access unless backbones were left out of the file and must come from their source.
        """
        folder = resolve_core(folder)
        config = CoreConfig.load(folder / CONFIG_NAME)
        from safetensors import safe_open

        with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as fh:
            full = (fh.metadata() or {}).get("include_frozen", "True") == "True"
        # Only backbones left out of the file are rebuilt from their pretrained source.
        image_from_source = not full and config.freeze_image
        text_from_source = not full and config.freeze_text
        text_dir = None if text_from_source or not config.uses_text else str(folder / TEXT_DIR)
        model = cls(config, pretrained=image_from_source, pretrained_text=text_from_source, _text_config_dir=text_dir)
        state = _upgrade_head_keys(load_file(str(folder / WEIGHTS_NAME)))
        missing, unexpected = model.load_state_dict(state, strict=False)
        frozen = tuple(p for p, f in (("image_backbone.", config.freeze_image), ("text_encoder.", config.freeze_text)) if f)
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        bad = [k for k in missing if full or not k.startswith(frozen) or k in trained]
        if bad or unexpected:
            raise RuntimeError(f"{folder}: weights do not match the config (missing {bad[:5]}, unexpected {unexpected[:5]})")
        return model.to(device).eval()


def join_features(image: torch.Tensor | None, text: torch.Tensor | None) -> torch.Tensor:
    """Image features ((B, Di), or (B, V, Di) for V views of each image) and text features (B, Dt) as the
    head's input: (B, Di + Dt), or (B, V, Di + Dt) with the text repeated for every view."""
    if image is None or text is None:
        return image if text is None else text
    if image.dim() == 3:
        text = text.unsqueeze(1).expand(-1, image.shape[1], -1)
    return torch.cat([image, text], dim=-1)


def _mlp(width: int, hidden: int, dropout: float) -> nn.Sequential:
    """Dropout-Linear-ReLU-Dropout-Linear (the paper's head), or with `hidden` 0 Dropout-Linear (linear in the features)."""
    if hidden == 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(width, 1))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


class CoreHead(nn.Module):
    """The fusion head: optional feature standardisation, then `n_heads` MLPs (Linear-ReLU-Linear, the
    paper's head when n_heads=1) on the same features, each initialised differently.

    Standardisation divides each feature by its spread on the training rows (`set_feature_stats`), so
    features of very different scales (pooled image maps, their standard deviations, mean-pooled text)
    reach the first layer on one scale. The heads are trained side by side, each on its own loss; the
    score is their mean (a seed ensemble that costs one backbone pass).
    """

    def __init__(self, width: int, hidden: int, dropout: float = 0.0, n_heads: int = 1, standardize: bool = False):
        super().__init__()
        self.in_features, self.standardize = width, standardize
        self.members = nn.ModuleList(_mlp(width, hidden, dropout) for _ in range(n_heads))
        if standardize:
            self.register_buffer("feature_mean", torch.zeros(width))
            self.register_buffer("feature_std", torch.ones(width))

    @torch.no_grad()
    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise by the mean and std of `features` (N, D) or (N, V, D), the training rows' features."""
        if not self.standardize:
            raise RuntimeError("this head was built without standardize_features")
        features = features.float().reshape(-1, features.shape[-1])
        std = features.std(0, unbiased=False)
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., D) features to (..., n_heads) z-scores."""
        if self.standardize:
            features = (features - self.feature_mean) / self.feature_std
        return torch.cat([member(features) for member in self.members], dim=-1)


def _upgrade_head_keys(state: dict) -> dict:
    """Weights saved before heads became `CoreHead` (`head.1.weight`) under today's names."""
    return {f"head.members.0.{k[5:]}" if k.startswith("head.") and k[5:6].isdigit() else k: v for k, v in state.items()}


def create_core(
    name: str = "paper", pretrained: bool = True, pretrained_text: bool | None = None, **overrides
) -> CoreModel:
    """A CORE model from a preset (see `list_presets()`) with any `CoreConfig` field overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown CORE preset {name!r}; choose from {sorted(PRESETS)}")
    config = CoreConfig(**{**PRESETS[name], **overrides})
    return CoreModel(config, pretrained=pretrained, pretrained_text=pretrained_text)
