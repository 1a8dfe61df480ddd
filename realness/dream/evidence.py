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

A claim that carries a box (`the face [412, 180, 590, 420] looks warped`, `realness.boxes`: a describer
grounded in the regions it was shown) is mapped inside that box alone, whatever it names.

Stage 1 (`EvidenceFinder.find`: the detectors and the artifact map, once per image; for a describer trained
with aspects, also the aspect tagger, `realness.dream.aspects`) is shared: `realness run`
gives its regions to the describer (`describe.prompt`) and its `Evidence` back to `map_batch`.

A "No" answer claims nothing, but the map still shows where the artifact map looks, marked as such
(`RealnessMap.note`), so a user can see what the model saw; with CLIP, "No" stays a flat map.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from realness.boxes import find_boxes, strip_boxes
from realness.dream.artifact import ArtifactMapModel
from realness.dream.aspects import AspectTagger
from realness.dream.configuration import DreamConfig
from realness.dream.maps import RealnessMap, map_size
from realness.dream.regions import LABELS, Region, RegionDetector, Regions, box_mask
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


@dataclass
class Evidence:
    """Stage 1 for one image: the detected regions (each with its `suspicion`; with an aspect tagger, a `Regions`
    carrying the image's aspects) and the raw artifact map."""

    regions: list[Region]
    artifact: np.ndarray  # (h, w) float32 at the map size


class EvidenceFinder:
    """Stage 1: the region detectors and the artifact map, run once per image; with `aspects`, the aspect tagger
    too (`realness.dream.aspects`, `config.aspect_model`), whose aspects the regions carry."""

    def __init__(self, config: DreamConfig | None = None, device: str = "cpu", artifact_model=None, detector=None,
                 aspects: bool = False):
        self.config = config or DreamConfig()
        self.device = device
        self.artifact = artifact_model or ArtifactMapModel.from_pretrained(self.config.artifact_model, device=device)
        self.detector = detector or RegionDetector(self.config.detectors)
        self.tagger = None
        if aspects:
            self.use_aspects()

    def use_aspects(self) -> None:
        """Load the aspect tagger (once), so that `find` also gives each image's aspects."""
        if self.tagger is None:
            self.tagger = AspectTagger.from_pretrained(self.config.aspect_model, device=self.device)

    def close(self) -> None:
        self.detector.close()

    def find(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Region] | None] | None = None) -> list[Evidence]:
        """Each image's regions, `suspicion` set to the min-max-scaled artifact map's mean inside the box.
        `regions` (per image, None for those to detect): regions found already (by another worker), which only
        get their suspicion (and, with a tagger, their aspects when they carry none)."""
        sizes = [map_size(im, self.config.map_long_side) for im in images]
        given = list(regions) if regions is not None else [None] * len(images)
        out = []
        for image, amap, known in zip(images, self.artifact.predict(images, sizes=sizes), given):
            regions = (Regions(known, getattr(known, "aspects", None)) if known is not None
                       else self.detector.detect(image))
            scaled = _minmax(amap)
            for r in regions:
                inside = box_mask([r], scaled.shape, image.size) > 0
                r.suspicion = float(scaled[inside].mean()) if inside.any() else 0.0
            out.append(Evidence(regions, amap.astype(np.float32)))
        untagged = [i for i, e in enumerate(out) if getattr(e.regions, "aspects", None) is None]
        if self.tagger is not None and untagged:
            tags = self.tagger.tag([images[i] for i in untagged], [out[i].regions for i in untagged])
            for i, aspects in zip(untagged, tags):
                out[i].regions = Regions(out[i].regions, aspects)
        return out


def claim_map(phrase: str, regions: Sequence[Region], base: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """One claim's map and what grounded it: its own boxes if it carries any, else the regions of the kinds it
    names, else the artifact map alone (`base`, min-max scaled)."""
    boxes, _ = find_boxes(phrase)
    text = strip_boxes(phrase)
    named, hits = ground_claim(text, regions)
    if boxes:
        owned = [Region("claim", b.pixels(image_size), 1.0, "describer") for b in boxes]
        inside = box_mask(owned, base.shape, image_size, soft=0.1)
        info = {"claim": text, "names": named, "regions": [], "boxes": [list(b.grid) for b in boxes]}
    elif hits:
        inside = box_mask(hits, base.shape, image_size, soft=0.1)
        info = {"claim": text, "names": named, "regions": [regions.index(h) for h in hits]}
    else:
        return base, {"claim": text, "names": named, "regions": []}
    return inside * (1.0 + base) + (1 - inside) * 0.5 * base, info


class EvidenceMapper:
    """`DreamMapper`'s interface (`map`, `map_batch`) with the artifact map and region detectors instead of CLIP."""

    def __init__(self, config: DreamConfig | None = None, device: str = "cpu", artifact_model=None, detector=None,
                 finder: EvidenceFinder | None = None):
        self.config = config or DreamConfig()
        self.device = device
        self.finder = finder or EvidenceFinder(self.config, device, artifact_model, detector)
        self.artifact, self.detector = self.finder.artifact, self.finder.detector

    def close(self) -> None:
        self.finder.close()

    def info(self) -> dict:
        return {"source": "evidence", "artifact_model": self.config.artifact_model, "detectors": list(self.config.detectors),
                "detectors_missing": dict(self.detector.missing), "placeholder": False}

    def map(self, image: Image.Image, description: str):
        return self.map_batch([image], [description])[0]

    def map_batch(self, images: Sequence[Image.Image], descriptions: Sequence[str],
                  evidence: Sequence[Evidence] | None = None) -> list:
        """Maps for `descriptions`; `evidence` (stage 1 run already, `EvidenceFinder.find`) spares a second pass."""
        if len(images) != len(descriptions):
            raise ValueError(f"{len(images)} images but {len(descriptions)} descriptions")
        evidence = evidence if evidence is not None else self.finder.find(images)
        results = []
        c = self.config
        for image, description, found in zip(images, descriptions, evidence):
            regions, amap = found.regions, found.artifact
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
                    one, info = claim_map(phrase, regions, base, image.size)
                    maps.append(one)
                    grounded.append(info)
                maps = np.stack(maps)
                phrases = [g["claim"] for g in grounded]
            combined = maps.mean(0) if c.combine == "mean" else maps.max(0)
            results.append(RealnessMap(
                map=_minmax(combined).astype(np.float32), phrases=list(phrases),
                phrase_maps=np.stack([_minmax(m) for m in maps]).astype(np.float16) if phrases else np.zeros((0, *base.shape), np.float16),
                raw_range=(float(combined.min()), float(combined.max())), verdict=verdict, flat=False, method="evidence",
                image_size=image.size, source="evidence", regions=[r.to_dict() for r in regions], grounding=grounded,
                artifact=amap.astype(np.float16), note=note))
        return results
