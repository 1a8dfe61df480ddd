"""The aspect tagger: which of the mention vocabulary's categories a description of an image should discuss.

Stage 1's third part, beside the region detectors and the artifact map. The describer's weakest point is
*what* it talks about: the small offline one writes about lighting, reflections or geometry almost never and
about faces and people where there are none (eval/README.md). The tagger reads the image once more with the
frozen ImageNet backbone that ships offline (EfficientNet-Lite0: the mean and standard deviation of its last
two stages' feature maps, 3,200 numbers) plus which kinds the detectors found (face, hand, person, text), and
gives one logistic probability per category of `realness.mentions.CATEGORIES` (faces, eyes, hands, body,
text, animals, lighting, reflections, skin, background, geometry, objects). A category is flagged when its
probability reaches its own threshold, chosen for the best F1 on the out-of-fold probabilities of *repeated*
cross-validation on the training images (5 shuffles of 5 folds, pooled): one shuffle's cut sits on a handful
of images and moved the validation macro-F1 by ±0.015 from seed to seed (realness/dream/README.md).

**Grounding rule.** The categories a detector can confirm (`realness.mentions.DETECTABLE`: faces and eyes by
the face detector, hands, body by the person detector, text) are flagged only when their detector found
one in the image, however likely the tagger finds them: a describer told to discuss a face that no detector
sees would name something that may not be there.

`AspectTagger.from_pretrained("offline/aspect-tagger")` loads the bundled weights (float16 safetensors, under
100 kB: standardisation, one linear layer, thresholds) onto the packaged backbone; `tag(images, regions)`
gives each image's aspects. `fit_aspect_tagger` trains one from features and labels
(`training/train_aspect_tagger.py` is the command).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from realness.core.backbones import build_image_backbone
from realness.mentions import CATEGORIES, DETECTABLE
from realness.registry import ASPECT_TAGGER, BUNDLED_TAGGERS, resolve_bundled

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
KINDS = tuple(DETECTABLE)  # face, hand, person, text: the detector flags appended to the image features
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Which detector label a category needs (faces and eyes: face; hands: hand; body: person; text: text).
NEEDS = {category: kind for kind, categories in DETECTABLE.items() for category in categories}


@dataclass
class AspectConfig:
    """The tagger's features and what it was fitted with."""

    backbone: str = field(default="offline/efficientnet_lite0", metadata={"help": "Frozen image backbone."})
    levels: int = field(default=2, metadata={"help": "Top stages of the backbone read."})
    pooling: str = field(default="mean_std", metadata={"help": "Each stage's map pooled by mean and std."})
    long_side: int = field(default=512, metadata={"help": "Images read with their longer side at this many pixels."})
    categories: tuple[str, ...] = CATEGORIES
    c: float = field(default=0.01, metadata={"help": "Inverse L2 strength of the logistic regressions."})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> AspectConfig:
        d = json.loads(Path(path).read_text())
        d["categories"] = tuple(d["categories"])
        return cls(**d)


def resolve_aspect_tagger(name: str | Path) -> Path:
    return resolve_bundled(name, BUNDLED_TAGGERS, "aspect tagger", CONFIG_NAME)


def detector_flags(regions_per_image: Sequence[Sequence]) -> np.ndarray:
    """(n, 4) 0/1: whether each image's regions hold a face, hand, person, text."""
    return np.array([[float(any(r.label == k for r in regions)) for k in KINDS] for regions in regions_per_image],
                    np.float32).reshape(len(regions_per_image), len(KINDS))


def grounded(flagged: np.ndarray, flags: np.ndarray, categories: Sequence[str] = CATEGORIES) -> np.ndarray:
    """`flagged` (n, categories) with each detector-confirmed category cleared where its detector found nothing."""
    out = flagged.copy()
    for j, c in enumerate(categories):
        if c in NEEDS:
            out[:, j] &= flags[:, KINDS.index(NEEDS[c])] > 0
    return out


class AspectTagger(nn.Module):
    """Frozen backbone features + detector flags -> one probability per category; `tag` applies the
    thresholds and the grounding rule."""

    def __init__(self, config: AspectConfig | None = None, pretrained: bool = True):
        super().__init__()
        self.config = config or AspectConfig()
        self.backbone, dim = build_image_backbone(self.config.backbone, pretrained, self.config.levels,
                                                  self.config.pooling)
        self.backbone.eval().requires_grad_(False)
        n, d = len(self.config.categories), dim + len(KINDS)
        self.register_buffer("shift", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        self.register_buffer("threshold", torch.full((n,), 0.5))
        self.linear = nn.Linear(d, n)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def input_size(self, size: tuple[int, int]) -> tuple[int, int]:
        w, h = size
        scale = self.config.long_side / max(w, h)
        return max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32)

    @torch.no_grad()
    def features(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, D) pooled backbone features, one image at a time (sizes differ)."""
        device = self.linear.weight.device
        out = []
        for im in images:
            rgb = np.asarray(im.convert("RGB").resize(self.input_size(im.size), Image.Resampling.BICUBIC), np.float32)
            x = (torch.from_numpy(rgb / 255).permute(2, 0, 1)[None].to(device) - self.mean) / self.std
            out.append(self.backbone(x)[0].float().cpu().numpy())
        return np.stack(out) if out else np.zeros((0, self.linear.in_features - len(KINDS)), np.float32)

    @torch.no_grad()
    def probabilities(self, features: np.ndarray, flags: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.concatenate([features, flags], 1)).to(self.linear.weight)
        return torch.sigmoid(self.linear((x - self.shift) / self.scale)).cpu().numpy()

    def flag(self, features: np.ndarray, flags: np.ndarray) -> np.ndarray:
        """(n, categories) bool: thresholds applied, then the grounding rule."""
        raw = self.probabilities(features, flags) >= self.threshold.cpu().numpy()
        return grounded(raw, flags, self.config.categories)

    def tag(self, images: Sequence[Image.Image], regions: Sequence[Sequence]) -> list[tuple[str, ...]]:
        """Each image's aspects (category names, in `categories` order), given its stage-1 regions."""
        flagged = self.flag(self.features(images), detector_flags(regions))
        return [tuple(c for c, on in zip(self.config.categories, row) if on) for row in flagged]

    # ---- saving and loading -----------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, metadata: dict | None = None) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / CONFIG_NAME)
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in self.state_dict().items()
                 if not k.startswith("backbone.") and k != "threshold"}
        state["threshold"] = self.threshold.detach().float().contiguous()  # exact: a threshold may sit on a tie
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", **{k: str(v) for k, v in (metadata or {}).items()}})
        return folder

    @classmethod
    def from_pretrained(cls, name: str | Path = ASPECT_TAGGER, device: str | torch.device = "cpu") -> AspectTagger:
        from safetensors.torch import load_file

        folder = resolve_aspect_tagger(name)
        model = cls(AspectConfig.load(folder / CONFIG_NAME), pretrained=True)
        state = {k: v.float() for k, v in load_file(str(folder / WEIGHTS_NAME)).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("backbone.")]
        if bad or unexpected:
            raise RuntimeError(f"{folder}: weights do not match the config (missing {bad[:5]}, unexpected {unexpected[:5]})")
        return model.to(device).eval()


def _f1(y: np.ndarray, p: np.ndarray) -> float:
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_report(labels: np.ndarray, flagged: np.ndarray, categories: Sequence[str] = CATEGORIES) -> dict:
    """Per-category F1 of `flagged` against `labels` (both (n, categories) bool) and their macro-F1 over the
    categories either side has (`realness.mentions`' convention; None when neither has any)."""
    per = {c: _f1(labels[:, j], flagged[:, j]) for j, c in enumerate(categories)
           if labels[:, j].any() or flagged[:, j].any()}
    return {"f1": per, "macro_f1": float(np.mean(list(per.values()))) if per else None}


def _logistic(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=3000, random_state=seed)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    shift, scale = x.mean(0), x.std(0)
    return shift, np.where(scale > 1e-6, scale, 1.0)


def cross_validate(x: np.ndarray, labels: np.ndarray, c: float, folds: int = 5, seed: int = 42) -> np.ndarray:
    """Out-of-fold probabilities (n, categories) of logistic regressions with inverse L2 strength `c` on
    standardised `x`; a category with fewer than `folds` positives gets zeros."""
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(labels.shape, np.float64)
    for j in range(labels.shape[1]):
        y = labels[:, j]
        if y.sum() < folds:
            continue
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
            shift, scale = _standardise(x[train])
            model = _logistic(c, seed).fit((x[train] - shift) / scale, y[train])
            oof[test, j] = model.predict_proba((x[test] - shift) / scale)[:, 1]
    return oof


def best_thresholds(oof: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per category, the threshold on the out-of-fold probabilities with the best F1 (among the probabilities
    themselves), and that F1; a category never positive gets an unreachable threshold (2.0) and F1 0."""
    thresholds, f1s = np.full(labels.shape[1], 2.0), np.zeros(labels.shape[1])
    for j in range(labels.shape[1]):
        y = labels[:, j]
        if not y.any() or not oof[:, j].any():
            continue
        candidates = np.unique(oof[:, j])
        scores = [_f1(y, oof[:, j] >= t) for t in candidates]
        best = int(np.argmax(scores))
        thresholds[j], f1s[j] = candidates[best], scores[best]
    return thresholds, f1s


def repeated_cv_thresholds(x: np.ndarray, labels: np.ndarray, flags: np.ndarray, c: float, folds: int = 5,
                           repeats: int = 5, seed: int = 42, categories: Sequence[str] = CATEGORIES) -> tuple[np.ndarray, dict]:
    """Thresholds from `repeats` shuffles of `folds`-fold cross-validation (seeds `seed`, `seed + 1`, ...): the
    best-F1 cut of all the out-of-fold probabilities pooled, so no one shuffle's few images decide it. The
    report: the macro-F1 of the grounded flags those thresholds give, per shuffle and their mean (the number
    candidates are compared by), and the per-category F1 averaged over the shuffles."""
    oofs = [cross_validate(x, labels, c, folds, seed + r) for r in range(repeats)]
    thresholds, _ = best_thresholds(np.concatenate(oofs), np.concatenate([labels] * repeats))
    scored = [f1_report(labels, grounded(oof >= thresholds, flags, categories), categories) for oof in oofs]
    per = {k: float(np.mean([s["f1"].get(k, 0.0) for s in scored])) for k in scored[0]["f1"]}
    shuffles = [s["macro_f1"] or 0.0 for s in scored]
    return thresholds, {"macro_f1": float(np.mean(shuffles)), "macro_f1_per_shuffle": shuffles, "f1": per}


def fit_aspect_tagger(features: np.ndarray, flags: np.ndarray, labels: np.ndarray, config: AspectConfig,
                      cs: Sequence[float] = (0.0003, 0.001, 0.003, 0.01, 0.03), folds: int = 5, seed: int = 42,
                      pretrained: bool = True, repeats: int = 5) -> tuple[AspectTagger, dict]:
    """A tagger fitted on (n, D) `features`, (n, 4) detector `flags` and (n, categories) bool `labels` (what the
    reference descriptions mention): the inverse L2 strength with the best cross-validated macro-F1 of the
    *grounded* flags, per-category thresholds from its pooled out-of-fold probabilities over `repeats`
    shuffles (`repeated_cv_thresholds`), then the final fit on all rows. The report holds every candidate's
    cross-validated macro-F1 (mean and per shuffle) and per-category F1."""
    x = np.concatenate([features, flags], 1).astype(np.float64)
    labels = labels.astype(bool)
    report = {"n": len(x), "positives": dict(zip(config.categories, labels.sum(0).tolist())), "repeats": repeats,
              "candidates": {}}
    best = None
    for c in cs:
        thresholds, scored = repeated_cv_thresholds(x, labels, flags, c, folds, repeats, seed, config.categories)
        report["candidates"][str(c)] = scored
        if best is None or scored["macro_f1"] > best[0]:
            best = (scored["macro_f1"], c, thresholds)
    macro, c, thresholds = best
    report.update(c=c, cv_macro_f1=macro, thresholds=dict(zip(config.categories, thresholds.tolist())))
    config = AspectConfig(**{**asdict(config), "c": c})
    tagger = AspectTagger(config, pretrained=pretrained)
    shift, scale = _standardise(x)
    weight, bias = np.zeros((labels.shape[1], x.shape[1])), np.full(labels.shape[1], -30.0)
    for j in range(labels.shape[1]):
        if labels[:, j].any() and not labels[:, j].all():
            model = _logistic(c, seed).fit((x - shift) / scale, labels[:, j])
            weight[j], bias[j] = model.coef_[0], model.intercept_[0]
    with torch.no_grad():
        tagger.shift.copy_(torch.from_numpy(shift))
        tagger.scale.copy_(torch.from_numpy(scale))
        tagger.linear.weight.copy_(torch.from_numpy(weight))
        tagger.linear.bias.copy_(torch.from_numpy(bias))
        tagger.threshold.copy_(torch.from_numpy(thresholds))
    return tagger.eval(), report
