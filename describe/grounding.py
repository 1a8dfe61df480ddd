"""Stage 1 for describers, and grounded training targets: RAISE-TD's GPT-4.1 sentences tied to its regions.

`TakesRegions` is what every describer client (the transformers and vLLM engines, the server client) shares:
whether it takes regions (`regions`: its `RegionPrompt`) and, when a caller gives none, finding them itself.

Stage 1 (`realness.dream.evidence.EvidenceFinder`: face, hand, person and text detectors plus the artifact
map; for a describer trained with aspects, the aspect tagger too) runs once over a dataset's images;
`find_regions` keeps what it found in a JSONL file (one line per image: filename, size, regions, aspects), so
training can stop and resume, and later runs reuse it. `target_aspects` gives a training target's own aspects.

The rule (`ground_answer`), sentence by sentence (split at . ; ! ?): a sentence that names a detectable kind
(the words of `realness.dream.evidence.GROUNDING`: face words for `face`, hand words for `hand`, body and
person words for `person`, text and sign words for `text`) gets that kind's box written after its first
word of the kind, when the prompt lists exactly one region of that kind. When it lists several, which one
the sentence means is ambiguous and no box is written; when it lists none, there is nothing to tie. The
counts of each case come back as `GroundingStats` (training/README.md has RAISE-TD's).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from describe.prompt import RegionPrompt
from realness.boxes import format_box, strip_boxes, to_grid
from realness.dream.configuration import DreamConfig
from realness.dream.evidence import GROUNDING, EvidenceFinder
from realness.dream.regions import Region, Regions, rank_regions
from realness.files import one_writer
from realness.images import ImageError, load_image
from realness.mentions import CATEGORIES, mentions

logger = logging.getLogger(__name__)
_SENTENCE = re.compile(r"[^.;!?]+[.;!?]*")
_STAGE_ONE = threading.Lock()  # the detectors are not thread-safe; the server client calls from many threads


class TakesRegions:
    """A describer's stage-1 side: `regions` (its `RegionPrompt`, or None) and a finder made on first use."""

    regions: RegionPrompt | None = None
    device: str = "cpu"
    _finder: EvidenceFinder | None = None

    @property
    def uses_regions(self) -> bool:
        return self.regions is not None and self.regions.enabled

    def find_regions(self, images) -> list | None:
        """Stage 1 for `images` (each image's regions), or None when this describer takes no regions. Safe to
        call from several threads (the server client's requests)."""
        if not self.uses_regions:
            return None
        with _STAGE_ONE:
            if self._finder is None:
                self._finder = EvidenceFinder(device=self.device, aspects=self.regions.aspects)
            return [e.regions for e in self._finder.find(images)]

    def regions_for(self, images, regions: list | None) -> list | None:
        """The regions a caller gave, else stage 1's (None when this describer takes no regions)."""
        return regions if regions is not None else self.find_regions(images)

    def close_finder(self) -> None:
        if self._finder is not None:
            self._finder.close()
            self._finder = None


@dataclass
class GroundingStats:
    """How the sentences of the targets were tied to regions."""

    sentences: int = 0  # sentences naming a detectable kind (one count per kind named)
    tied: int = 0  # ... whose kind the prompt lists exactly once: a box was written
    ambiguous: int = 0  # ... whose kind it lists several times: no box
    unseen: int = 0  # ... whose kind the detectors did not find: no box

    def add(self, other: GroundingStats) -> None:
        for k in ("sentences", "tied", "ambiguous", "unseen"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_dict(self) -> dict:
        n = max(1, self.sentences)
        return {"sentences": self.sentences, "tied": self.tied, "ambiguous": self.ambiguous, "unseen": self.unseen,
                "tied_share": round(self.tied / n, 3), "ambiguous_share": round(self.ambiguous / n, 3),
                "unseen_share": round(self.unseen / n, 3)}


def shown_regions(regions: Sequence[Region], cfg: RegionPrompt) -> list[Region]:
    """The regions a prompt lists (`describe.prompt.region_prompt`'s choice): ranked, at most `max_regions`."""
    return rank_regions(regions, cfg.order)[:cfg.max_regions]


def ground_answer(answer: str, regions: Sequence[Region], image_size: tuple[int, int],
                  cfg: RegionPrompt) -> tuple[str, GroundingStats]:
    """The answer with the box of the one listed region of each kind a sentence names written after the
    sentence's first word of that kind (the module docstring's rule), and the counts."""
    shown = shown_regions(regions, cfg)
    stats = GroundingStats()
    out = []
    for m in _SENTENCE.finditer(answer):
        sentence = m.group(0)
        inserts = []
        for label, vocab in GROUNDING.items():
            word = re.search(r"\b(?:" + "|".join(map(re.escape, vocab)) + r")\b(?:'s)?", sentence, re.IGNORECASE)
            if not word:
                continue
            stats.sentences += 1
            kind = [r for r in shown if r.label == label]
            if len(kind) == 1:
                stats.tied += 1
                inserts.append((word.end(), " " + format_box(to_grid(kind[0].box, image_size))))
            elif kind:
                stats.ambiguous += 1
            else:
                stats.unseen += 1
        for at, box in sorted(inserts, reverse=True):
            sentence = sentence[:at] + box + sentence[at:]
        out.append(sentence)
    return "".join(out) if out else answer, stats


def target_aspects(answer: str) -> tuple[str, ...]:
    """The aspects (mention categories, in `CATEGORIES` order) a description discusses: what a describer
    trained with `RegionPrompt.aspects` is told its target discusses."""
    found = mentions(strip_boxes(answer))
    return tuple(c for c in CATEGORIES if c in found)


def find_regions(paths: Sequence[str | Path], cache: str | Path, config: DreamConfig | None = None,
                 device: str = "cpu", progress: bool = True,
                 aspects: bool = False) -> dict[str, tuple[tuple[int, int], list[Region]]]:
    """Stage 1 for every image, by file name: `(image size, regions)`. Images already in the `cache` JSONL are
    not run again; new ones are appended as they are found (an interrupted run resumes). An unreadable image
    is reported and gets no regions. With `aspects`, the aspect tagger runs too and the regions are `Regions`
    carrying them (a cached line without aspects is run again; the later line wins on reading)."""
    from tqdm.auto import tqdm

    cache = Path(cache)
    found: dict[str, tuple[tuple[int, int], list[Region]]] = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                regions = [Region.from_dict(r) for r in rec["regions"]]
                found[rec["filename"]] = (tuple(rec["size"]), Regions(regions, rec["aspects"]) if "aspects" in rec
                                          else regions)
    todo = [Path(p) for p in paths
            if Path(p).name not in found or (aspects and getattr(found[Path(p).name][1], "aspects", None) is None)]
    if not todo:
        return found
    cache.parent.mkdir(parents=True, exist_ok=True)
    finder = EvidenceFinder(config or DreamConfig(), device, aspects=aspects)
    try:
        with one_writer(cache, "stage 1 (describe.grounding.find_regions)"), cache.open("a") as fh, \
                tqdm(todo, desc="stage 1: regions", unit="img", disable=not progress, file=sys.stderr) as bar:
            for path in bar:
                try:
                    image = load_image(path)
                except ImageError as err:
                    logger.warning("%s", err)
                    continue
                evidence = finder.find([image])[0]
                found[path.name] = (image.size, evidence.regions)
                record = {"filename": path.name, "size": list(image.size),
                          "regions": [r.to_dict() for r in evidence.regions]}
                if getattr(evidence.regions, "aspects", None) is not None:
                    record["aspects"] = list(evidence.regions.aspects)
                fh.write(json.dumps(record) + "\n")
                fh.flush()
    finally:
        finder.close()
    return found
