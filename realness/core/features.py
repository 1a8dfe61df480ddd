"""Cache the pooled features of frozen backbones, so training only the head costs one backbone pass.

With both used backbones frozen and no augmentation, every epoch, fold and seed would recompute the same
features; computing them once turns a CPU cross-validation of hours into minutes. The cache lives in
safetensors files keyed by everything the features depend on (backbone, input size, normalisation,
pooling, token limit, each file's path, size and modification time, each description).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from realness.core.backbones import image_below
from realness.core.modeling import join_features
from realness.images import load_image

logger = logging.getLogger(__name__)


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _image_key(model, records) -> str:
    c = model.config
    files = [(r["image"], *(lambda st: (st.st_size, st.st_mtime_ns))(Path(r["image"]).stat())) for r in records]
    parts = {"backbone": c.image_backbone, "size": c.image_size, "mean": c.image_mean, "std": c.image_std,
             "files": files}
    if (c.image_levels, c.image_pooling) != (1, "mean"):  # keys of single-level caches stay as they were
        parts.update(levels=c.image_levels, pooling=c.image_pooling)
    if c.flip_tta:
        parts.update(flip=True)
    if c.image_views != "resize":
        parts.update(views=c.image_views, n_views=c.n_views)
    return "image-" + _key(parts)


def _text_key(model, records) -> str:
    c = model.config
    return "text-" + _key({"encoder": c.text_encoder, "pooling": c.text_pooling, "tokens": c.max_text_tokens,
                           "texts": [r["description"] for r in records]})


def _encode_views(model, records: list[dict], fn):
    """A batch encoder for `_compute`: `fn` of the records' preprocessed images, (B, ...), or with
    `flip_tta` of the images and their mirror images, (B, 2, ...), as the model scores them."""
    device = next(model.image_backbone.parameters()).device

    def encode(sl):
        pixels = torch.stack([model.processor.image_tensor(load_image(r["image"])) for r in records[sl]]).to(device)
        if model.config.flip_tta:
            return torch.stack([fn(pixels), fn(pixels.flip(-1))], dim=1)
        return fn(pixels)

    return encode


@torch.no_grad()
def _compute(encode, n: int, batch_size: int, desc: str, progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    out = []
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, unit="batch"):
        out.append(encode(slice(start, start + batch_size)).float().cpu())
    return torch.cat(out)


def cached_features(model, records: list[dict], cache_dir: str | Path, batch_size: int = 16,
                    progress: bool = True, text: bool = True, image: bool = True) -> torch.Tensor:
    """`model.features(...)` for every record, (N, D) or with `flip_tta` (N, 2, D), read from or written
    to `cache_dir` (`text=False`: the image part alone; `image=False`: the text part alone)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    image_feats = text_feats = None
    if model.config.uses_image and image:
        encode_images = _encode_views(model, records, model.image_features)
        image_feats = _cached(cache_dir / f"{_image_key(model, records)}.safetensors",
                              lambda: _compute(encode_images, len(records), batch_size, "image features", progress))
    if model.config.uses_text and text:
        def encode_texts(sl):
            batch = model.processor.tokenize([r["description"] for r in records[sl]])
            return model.text_encoder(batch["input_ids"].to(device), batch["attention_mask"].to(device))

        text_feats = _cached(cache_dir / f"{_text_key(model, records)}.safetensors",
                             lambda: _compute(encode_texts, len(records), batch_size * 4, "text features", progress))
    model.train(was_training)
    return join_features(image_feats, text_feats)


@torch.no_grad()
def cached_image_trunk(model, records: list[dict], cache_dir: str | Path, stages: int, batch_size: int = 16,
                       progress: bool = True) -> torch.Tensor:
    """The feature maps entering the image backbone's top `stages` stages for every image, (N, C, H, W),
    or with `flip_tta` (N, 2, C, H, W), read from or written to `cache_dir`: what training the top
    stages reads, the frozen bottom run once. EfficientNet-Lite0 at 384x512 under its last two stages:
    147 kB per image and view."""

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    backbone = model.image_backbone
    was_training = backbone.training
    backbone.eval()
    encode = _encode_views(model, records, lambda pixels: image_below(backbone, pixels, stages))
    key = _image_key(model, records).replace("image-", f"imagetrunk{stages}-", 1)
    out = _cached(cache_dir / f"{key}.safetensors", lambda: _compute(encode, len(records), batch_size, "image maps", progress))
    backbone.train(was_training)
    return out


@torch.no_grad()
def cached_text_hidden(model, records: list[dict], cache_dir: str | Path, layers: int, batch_size: int = 64,
                       progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states entering the text encoder's top `layers` layers for every description, padded
    to the longest: (N, T, H) float32 and the attention mask (N, T), read from or written to `cache_dir`.

    What a text adapter on the top layers trains on: the frozen bottom runs once. Costs N x T x H x 4
    bytes (510 descriptions of at most 128 tokens through MiniLM: at most 100 MB).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    c, encoder = model.config, model.text_encoder
    key = "texthidden-" + _key({"encoder": c.text_encoder, "tokens": c.max_text_tokens, "layers": layers,
                                "texts": [r["description"] for r in records]})

    def compute():
        from tqdm.auto import tqdm

        was_training = encoder.training
        encoder.eval()
        device = next(encoder.parameters()).device
        hidden, masks = [], []
        for start in tqdm(range(0, len(records), batch_size), desc="text hidden states", disable=not progress, unit="batch"):
            batch = model.processor.tokenize([r["description"] for r in records[start:start + batch_size]])
            h = encoder.hidden_below(batch["input_ids"].to(device), batch["attention_mask"].to(device), layers)
            pad = c.max_text_tokens - h.shape[1]
            hidden.append(torch.nn.functional.pad(h.float().cpu(), (0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(batch["attention_mask"], (0, pad)))
        encoder.train(was_training)
        mask = torch.cat(masks)
        length = int(mask.sum(1).max())
        return {"hidden": torch.cat(hidden)[:, :length].contiguous(), "mask": mask[:, :length].contiguous()}

    out = _cached(cache_dir / f"{key}.safetensors", compute, names=("hidden", "mask"))
    return out["hidden"], out["mask"]


def _cached(path: Path, compute, names: tuple[str, ...] | None = None):
    """One tensor (`names` None) or a dict of tensors, from `path` if it exists, else computed and saved."""
    if path.is_file():
        logger.info("using cached features %s", path)
        stored = load_file(str(path))
        return stored["features"] if names is None else {n: stored[n] for n in names}
    value = compute()
    tensors = {"features": value} if names is None else value
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)
    return value
