"""Dense realness maps: where an image looks like its description of what is unreal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from realness.boxes import find_boxes, from_grid, strip_boxes
from realness.dream.clip import dense_embeddings, encode_crops, encode_texts, image_stats, load_clip
from realness.dream.configuration import DreamConfig
from realness.dream.text import parse_verdict, split_phrases
from realness.files import atomic_path


@dataclass
class RealnessMap:
    """A map at working resolution (the image's, or smaller: its longer side at most
    `DreamConfig.map_long_side`): 1 = most like the described flaw, 0 = least. `full_size()` upsamples it
    to the image's own size on demand.

    Attributes:
        map: (H, W) float32 in [0, 1], the phrase maps combined then min-max normalised.
        phrases: the claims mapped (empty when flat).
        phrase_maps: (P, H, W) float16 in [0, 1], one per phrase, each min-max normalised.
        raw_range: (min, max) of the combined score before normalisation (cosine units; with contrast,
            similarity to the flaw minus similarity to the neutral prompt). A small range is a weak map.
        verdict: yes / no / somewhat, or "" when the description does not start with one.
        flat: True when nothing was mapped (a "No" answer): `map` is all zeros.
        image_size: (width, height) of the image the map belongs to (None when not recorded).
        source: what drew it: `clip` (DREAM's CLIP similarity) or `evidence` (artifact map + regions).
        regions: detected regions (`Region.to_dict()`: label, box in image pixels, score, ...), evidence only.
        grounding: per claim, the labels it names and the indices of the regions it was grounded in.
        artifact: (H, W) float16 artifact-map probabilities (evidence only), before any grounding.
        note: a caveat shown with the map (e.g. a "No" answer mapped only to show where the model looks).
    """

    map: np.ndarray
    phrases: list[str] = field(default_factory=list)
    phrase_maps: np.ndarray | None = None
    raw_range: tuple[float, float] = (0.0, 0.0)
    verdict: str = ""
    flat: bool = False
    method: str = "dense"
    image_size: tuple[int, int] | None = None
    source: str = "clip"
    regions: list[dict] = field(default_factory=list)
    grounding: list[dict] = field(default_factory=list)
    artifact: np.ndarray | None = None
    note: str = ""

    def save(self, path: str | Path) -> Path:
        """Write an `.npz` with the maps and a JSON header of the rest."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        phrase_maps = self.phrase_maps if self.phrase_maps is not None else np.zeros((0, *self.map.shape), np.float16)
        meta = {"phrases": self.phrases, "raw_range": list(self.raw_range), "verdict": self.verdict,
                "flat": self.flat, "method": self.method,
                "image_size": list(self.image_size) if self.image_size else None, "source": self.source,
                "regions": self.regions, "grounding": self.grounding, "note": self.note}
        extra = {"artifact": self.artifact.astype(np.float16)} if self.artifact is not None else {}
        with atomic_path(path) as tmp:
            np.savez_compressed(tmp, map=self.map.astype(np.float32), phrase_maps=phrase_maps.astype(np.float16),
                                meta=np.array(json.dumps(meta)), **extra)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RealnessMap:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            size = meta.get("image_size")
            return cls(map=data["map"], phrase_maps=data["phrase_maps"], phrases=meta["phrases"],
                       raw_range=tuple(meta["raw_range"]), verdict=meta["verdict"], flat=meta["flat"],
                       method=meta["method"], image_size=tuple(size) if size else None,
                       source=meta.get("source", "clip"), regions=meta.get("regions", []),
                       grounding=meta.get("grounding", []), note=meta.get("note", ""),
                       artifact=data["artifact"] if "artifact" in data.files else None)

    def full_size(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The map upsampled (bilinear) to `size` = (width, height), default the image's own size."""
        w, h = size or self.image_size or self.map.shape[::-1]
        if (h, w) == self.map.shape:
            return self.map
        return np.asarray(Image.fromarray(self.map.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR))

    def heatmap(self, colormap: str = "hot", size: tuple[int, int] | None = None) -> Image.Image:
        """The map drawn with a matplotlib colour map, as an RGB image of the map's size (or `size` = (w, h))."""
        import matplotlib

        values = self.map if size is None else self.full_size(size)
        # matplotlib's own 256-entry table, indexed as it indexes floats, without its float64 RGBA copy
        lut = (matplotlib.colormaps[colormap].resampled(256)(np.arange(256))[:, :3] * 255).round().astype(np.uint8)
        return Image.fromarray(lut[np.minimum((np.clip(values, 0, 1) * 256).astype(np.int32), 255)])

    def overlay(self, image: Image.Image, colormap: str = "hot", alpha: float = 0.5,
                max_side: int | None = None) -> Image.Image:
        """The heatmap blended over the image (`alpha` = heatmap opacity), at the map's size, or with its
        longer side at `max_side` pixels (never larger than the image)."""
        size = self.map.shape[::-1]
        if max_side:
            scale = min(1.0, max_side / max(image.width, image.height))
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        base = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        out = Image.blend(base, self.heatmap(colormap, None if size == self.map.shape[::-1] else size), alpha)
        shown = self.regions + self.claim_boxes()
        return draw_regions(out, shown, image.size) if shown else out

    def claim_boxes(self) -> list[dict]:
        """The boxes grounded claims carry (`realness.boxes`), as regions labelled `claim` in image pixels."""
        if self.image_size is None:
            return []
        return [{"label": "claim", "box": [round(v, 1) for v in from_grid(b, self.image_size)], "claim": g["claim"]}
                for g in self.grounding for b in g.get("boxes", ())]


REGION_COLOURS = {"face": (0, 200, 255), "hand": (80, 255, 80), "person": (255, 80, 255), "text": (255, 220, 0),
                  "claim": (255, 40, 40)}


def map_size(image: Image.Image, long_side: int) -> tuple[int, int]:
    """(w, h) of a map: the image's size, or smaller with the longer side at `long_side` (DreamConfig.map_long_side)."""
    scale = min(1.0, long_side / max(image.width, image.height))
    return max(1, round(image.width * scale)), max(1, round(image.height * scale))


def draw_regions(picture: Image.Image, regions: list[dict], image_size: tuple[int, int]) -> Image.Image:
    """`picture` (the image, or an overlay at any size) with each region's box and "label score" drawn."""
    from PIL import ImageDraw, ImageFont

    picture = picture.copy()
    draw = ImageDraw.Draw(picture)
    sx, sy = picture.width / image_size[0], picture.height / image_size[1]
    width = max(1, round(max(picture.size) / 256))
    try:
        font = ImageFont.load_default(size=max(10, round(max(picture.size) / 40)))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for r in regions:
        x0, y0, x1, y1 = r["box"]
        box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        colour = REGION_COLOURS.get(r["label"], (255, 255, 255))
        draw.rectangle(box, outline=colour, width=width)
        label = f"{r['label']} {r['score']:.2f}" if r.get("score") is not None else r["label"]
        tx, ty = box[0] + width, max(0, box[1] - font.size - 2 * width) if box[1] > font.size + 2 * width else box[1] + width
        bg = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle(bg, fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=colour, font=font)
    return picture


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
    return torch.where(hi - lo > 1e-12, (x - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(x))


def _positions(length: int, window: int, stride: int) -> list[int]:
    """Window starts covering [0, length): a regular grid plus one flush with the far edge."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


class DreamMapper:
    """Computes `RealnessMap`s with a CLIP model; see `DreamConfig` for the options."""

    def __init__(self, config: DreamConfig | None = None, device: str = "cpu", clip=None, tokenizer=None):
        self.config = config or DreamConfig()
        self.device = device
        if clip is None:
            clip, tokenizer = load_clip(self.config.model, self.config.pretrained, self.config.model_config_dir, device)
        self.clip, self.tokenizer = clip.to(device).eval(), tokenizer
        self.mean, self.std = image_stats(self.clip)
        size = self.clip.visual.image_size
        self.input_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        patch = self.clip.visual.patch_size
        self.patch = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)

    # ---- public -------------------------------------------------------------------------------
    def map(self, image: Image.Image, description: str) -> RealnessMap:
        """One image's map."""
        return self.map_batch([image], [description])[0]

    def map_batch(self, images: Sequence[Image.Image], descriptions: Sequence[str]) -> list[RealnessMap]:
        """Maps for several images; dense mode runs same-sized images in one forward pass."""
        if len(images) != len(descriptions):
            raise ValueError(f"{len(images)} images but {len(descriptions)} descriptions")
        parsed = [self._parse(d) for d in descriptions]
        results: list[RealnessMap | None] = [None] * len(images)
        todo = []
        for i, (image, (verdict, _)) in enumerate(zip(images, parsed)):
            if verdict == "no" and self.config.flat_for_no:
                w, h = self._map_size(image)
                results[i] = RealnessMap(np.zeros((h, w), np.float32), [], np.zeros((0, h, w), np.float16),
                                         (0.0, 0.0), verdict, True, self.config.method, image.size)
            else:
                todo.append(i)
        if not todo:
            return results
        texts = sorted({strip_boxes(p) for i in todo for p in parsed[i][1]})
        emb = encode_texts(self.clip, self.tokenizer, texts + [self.config.neutral_prompt])
        index = {t: k for k, t in enumerate(texts)}
        neutral = emb[-1] if self.config.contrast else None
        if self.config.method == "dense":
            raw = self._dense([images[i] for i in todo])
        else:
            raw = [self._window(images[i]) for i in todo]
        for i, feats in zip(todo, raw):
            phrases = parsed[i][1]
            text = emb[[index[strip_boxes(p)] for p in phrases]]
            results[i] = self._finish(feats, text, neutral, images[i], parsed[i][0], phrases)
        return results

    # ---- internals ----------------------------------------------------------------------------
    def _parse(self, description: str) -> tuple[str, list[str]]:
        """Verdict and claims; a description longer than `max_description_chars` is cut there, and only
        its first `max_phrases` claims are mapped (CLIP reads 77 tokens of each claim anyway)."""
        c = self.config
        verdict, body = parse_verdict(description[:c.max_description_chars])
        body = body or description[:c.max_description_chars].strip()
        return verdict, (split_phrases(body) if c.split_phrases else [body])[:c.max_phrases]

    def _map_size(self, image: Image.Image) -> tuple[int, int]:
        return map_size(image, self.config.map_long_side)

    def _pixels(self, image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
        """(3, h, w) normalised tensor of `image` resized to `size` = (w, h)."""
        img = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - self.mean) / self.std

    def _dense_size(self, image: Image.Image) -> tuple[int, int]:
        scale = self.config.dense_long_side / max(image.width, image.height)
        pw, ph = self.patch[1], self.patch[0]
        return (max(pw, round(image.width * scale / pw) * pw), max(ph, round(image.height * scale / ph) * ph))

    def _dense(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """Per image, (D, gh, gw) patch embeddings; images of equal working size share a pass."""
        sizes = [self._dense_size(im) for im in images]
        out: list[torch.Tensor | None] = [None] * len(images)
        for size in dict.fromkeys(sizes):
            idx = [k for k, s in enumerate(sizes) if s == size]
            pixels = torch.stack([self._pixels(images[k], size) for k in idx]).to(self.device)
            tokens = dense_embeddings(self.clip, pixels, self.config.dense_fix)
            for k, t in zip(idx, tokens):
                out[k] = t.permute(2, 0, 1)
        return out

    def _window(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]], tuple[int, int]]:
        """The paper's sliding window: pooled embeddings of every crop, and where each crop lies."""
        c = self.config
        scale = min(1.0, c.window_long_side / max(image.width, image.height))
        w, h = max(c.window, round(image.width * scale)), max(c.window, round(image.height * scale))
        work = image.convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
        boxes = [(x, y) for y in _positions(h, c.window, c.stride) for x in _positions(w, c.window, c.stride)]
        embs = []
        for start in range(0, len(boxes), c.crop_batch):
            crops = [work.crop((x, y, x + c.window, y + c.window)) for x, y in boxes[start:start + c.crop_batch]]
            pixels = torch.stack([self._pixels(cr, self.input_size[::-1]) for cr in crops]).to(self.device)
            embs.append(encode_crops(self.clip, pixels))
        return torch.cat(embs), boxes, (w, h)

    def _finish(self, feats, text: torch.Tensor, neutral, image: Image.Image, verdict: str, phrases) -> RealnessMap:
        if self.config.method == "dense":
            scores = torch.einsum("dhw,pd->phw", feats, text)
            if neutral is not None:
                scores = scores - torch.einsum("dhw,d->hw", feats, neutral)[None]
        else:
            embs, boxes, (w, h) = feats
            crop_scores = embs @ text.T  # (crops, P)
            if neutral is not None:
                crop_scores = crop_scores - (embs @ neutral)[:, None]
            total = torch.zeros(len(phrases), h, w)
            count = torch.zeros(h, w)
            win = self.config.window
            for (x, y), s in zip(boxes, crop_scores.cpu()):
                total[:, y:y + win, x:x + win] += s[:, None, None]
                count[y:y + win, x:x + win] += 1
            scores = total / count.clamp_min(1)
        w, h = self._map_size(image)
        scores = F.interpolate(scores[None].float().cpu(), size=(h, w), mode="bilinear", align_corners=False)[0]
        for p, phrase in enumerate(phrases):  # a claim with its own box (realness.boxes) is mapped inside it
            boxes, _ = find_boxes(phrase)
            if boxes:
                inside = torch.zeros(h, w, dtype=torch.bool)
                for b in boxes:
                    x0, y0, x1, y1 = b.pixels((w, h))
                    inside[int(y0):max(int(y0) + 1, round(y1)), int(x0):max(int(x0) + 1, round(x1))] = True
                scores[p] = torch.where(inside, scores[p], scores[p].min())
        phrases = [strip_boxes(p) for p in phrases]
        combined = scores.mean(0) if self.config.combine == "mean" else scores.amax(0)
        return RealnessMap(
            map=_minmax(combined).numpy().astype(np.float32),
            phrases=list(phrases),
            phrase_maps=_minmax(scores).numpy().astype(np.float16),
            raw_range=(float(combined.min()), float(combined.max())),
            verdict=verdict,
            flat=False,
            method=self.config.method,
            image_size=image.size,
        )
