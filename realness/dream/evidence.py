"""Realness maps from evidence that ships offline: the artifact map, sharpened by detected regions.

With no CLIP to read the description against the image, a claim is grounded by what it names:

| a claim naming | is grounded in | words (any, whole word, case-insensitive) |
|---|---|---|
| a face | detected `face` boxes | `GROUNDING["face"]` (face, eyes, mouth, teeth, nose, lips, smile, head, portrait, ...) |
| hands | detected `hand` boxes | hand(s), finger(s), thumb, palm, wrist, fist, nail(s) |
| a body or person | detected `person` boxes | body, person, people, man, woman, figure, limb(s), arm(s), leg(s), pose, ... |
| text or a sign | detected `text` boxes | text, sign(s), letter(s), writing, word(s), label, logo, caption, ... |
| skin | `face` and `person` boxes | skin |

A grounded claim's map is the artifact map inside the named regions' boxes (soft edges) lifted above
everything outside them, so the boxes come first and, within them, the most inconsistent part. A claim
that names nothing locatable, or names a kind no detector found ("the hands look wrong" with no hand
detected), is mapped by the artifact map alone. Claim maps combine as DREAM's do (`combine`).

A "No" answer claims nothing, but the map still shows where the artifact map looks, marked as such
(`RealnessMap.note`), so a user can see what the model saw; with CLIP, "No" stays a flat map.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from realness.dream.artifact import ArtifactMapModel
from realness.dream.configuration import DreamConfig
from realness.dream.maps import RealnessMap
from realness.dream.regions import LABELS, Region, RegionDetector, box_mask
from realness.dream.text import parse_verdict, split_phrases
from realness.mentions import DETECTABLE, MENTIONS

# A claim's words for each detector label: the mention vocabulary's detectable categories (realness.mentions).
GROUNDING: dict[str, tuple[str, ...]] = {kind: sum((MENTIONS[c] for c in categories), ())
                                         for kind, categories in DETECTABLE.items()}
SHARED = {"skin": ("face", "person")}
NO_CLAIM_NOTE = "verdict No: nothing was claimed; the map shows where the artifact map looks"
_WORD = re.compile(r"[a-z]+")


def named_labels(claim: str) -> list[str]:
    """The region labels a claim names, in `LABELS` order."""
    words = set(_WORD.findall(claim.lower()))
    named = {label for label, vocab in GROUNDING.items() if words & set(vocab)}
    for word, labels in SHARED.items():
        if word in words:
            named.update(labels)
    return [label for label in LABELS if label in named]


def ground_claim(claim: str, regions: Sequence[Region]) -> tuple[list[str], list[Region]]:
    """(labels the claim names, the detected regions of those labels); no regions means: artifact map alone."""
    named = named_labels(claim)
    return named, [r for r in regions if r.label in named]


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(x)


class EvidenceMapper:
    """`DreamMapper`'s interface (`map`, `map_batch`) with the artifact map and region detectors instead of CLIP."""

    def __init__(self, config: DreamConfig | None = None, device: str = "cpu", artifact_model=None, detector=None):
        self.config = config or DreamConfig()
        self.device = device
        self.artifact = artifact_model or ArtifactMapModel.from_pretrained(self.config.artifact_model, device=device)
        self.detector = detector or RegionDetector(self.config.detectors)

    def close(self) -> None:
        self.detector.close()

    def info(self) -> dict:
        return {"source": "evidence", "artifact_model": self.config.artifact_model, "detectors": list(self.config.detectors),
                "detectors_missing": dict(self.detector.missing), "placeholder": False}

    def map(self, image: Image.Image, description: str):
        return self.map_batch([image], [description])[0]

    def _map_size(self, image: Image.Image) -> tuple[int, int]:
        scale = min(1.0, self.config.map_long_side / max(image.width, image.height))
        return max(1, round(image.width * scale)), max(1, round(image.height * scale))

    def map_batch(self, images: Sequence[Image.Image], descriptions: Sequence[str]) -> list:
        if len(images) != len(descriptions):
            raise ValueError(f"{len(images)} images but {len(descriptions)} descriptions")
        sizes = [self._map_size(im) for im in images]
        artifact = self.artifact.predict(images, sizes=sizes)
        results = []
        c = self.config
        for image, description, _size, amap in zip(images, descriptions, sizes, artifact):
            regions = self.detector.detect(image)
            verdict, body = parse_verdict(description[:c.max_description_chars])
            body = body or description[:c.max_description_chars].strip()
            phrases = (split_phrases(body) if c.split_phrases else [body])[:c.max_phrases]
            base = _minmax(amap)
            note = ""
            if verdict == "no" or not phrases:
                phrases, maps, grounded = [], base[None], []
                note = NO_CLAIM_NOTE if verdict == "no" else ""
            else:
                maps, grounded = [], []
                for phrase in phrases:
                    named, hits = ground_claim(phrase, regions)
                    if hits:
                        inside = box_mask(hits, base.shape, image.size, soft=0.1)
                        maps.append(inside * (1.0 + base) + (1 - inside) * 0.5 * base)
                    else:
                        maps.append(base)
                    grounded.append({"claim": phrase, "names": named, "regions": [regions.index(h) for h in hits]})
                maps = np.stack(maps)
            combined = maps.mean(0) if c.combine == "mean" else maps.max(0)
            results.append(RealnessMap(
                map=_minmax(combined).astype(np.float32), phrases=list(phrases),
                phrase_maps=np.stack([_minmax(m) for m in maps]).astype(np.float16) if phrases else np.zeros((0, *base.shape), np.float16),
                raw_range=(float(combined.min()), float(combined.max())), verdict=verdict, flat=False, method="evidence",
                image_size=image.size, source="evidence", regions=[r.to_dict() for r in regions], grounding=grounded,
                artifact=amap.astype(np.float16), note=note))
        return results
