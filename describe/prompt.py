"""The describer's question (the answer contract it asks for is `realness.answers`), with or without regions.

The default question is the one RAISE-TD's GPT-4.1 descriptions answered (verbatim, typos included, so
a model fine-tuned on those descriptions sees the prompt they were written for). The contract: the answer
starts with Yes, No or Somewhat, and explains in at most about 30 words what looks unreal.

**Regions** (`RegionPrompt`; stage 1 is `realness.dream.evidence.EvidenceFinder`): the regions the detectors
found go after the question, one compact line, most suspicious first (`order`), at most `max_regions`:

    Regions found (label [x0, y0, x1, y1] on a 0-1000 grid, confidence): face [412, 180, 590, 420] 0.99; hand [...]
    0.87.
    The images after the first zoom in on the first 2 of them. If a claim is about one of them, write its box after
    the word, as in: the face [412, 180, 590, 420] looks warped.

(one line each in the prompt)

and the first `crops` of them go in as zoomed views: square crops around the box (`crop_margin` of context
on each side), resized to `crop_size`, as extra images after the image (Qwen2.5-VL / Qwen2-VL: a
multi-image message; the small describer: extra image tokens from its own encoder, `describe.small`, whose
processor resizes each crop once more to the encoder's own crop size, 224).
An image with no regions gets today's prompt exactly.

**Aspects** (`aspects`, off by default): stage 1's aspect tagger (`realness.dream.aspects`) also says which of
the mention vocabulary's categories a description of the image should discuss (faces, hands, body and text only
where their detector found one); they go in as one last line, `Aspects to discuss: lighting, skin.` (`none`
when it flags none), and a describer trained with it is given, for each target, the categories that target
discusses, so it learns to discuss what the line lists. `steer` holds the answer to the line at inference
(`describe.steering`: a logit bias on a listed aspect's words until the answer names it). Box format and the parser of grounded claims
(`parse_claims`, `strip_boxes`): `realness.boxes`, a layer below so DREAM reads the same boxes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from realness.boxes import GRID, BoxError, find_boxes, format_region, parse_box, strip_boxes, to_grid
from realness.dream.regions import ORDERS, Region, rank_regions

__all__ = ["DEFAULT_QUESTION", "DEFAULT_SYSTEM", "BoxError", "RegionPrompt", "aspects_line", "build_messages", "crop_regions",
           "parse_box", "parse_claims", "region_prompt", "saved_region_prompt", "strip_boxes"]

DEFAULT_SYSTEM = "You are a helpful assistant that describes images in detail."
DEFAULT_QUESTION = (
    "Is there anything unrealistic in this image? yes or no or somewhat,if yes or somewhat explain in maximum "
    "30 words, please ensure to explain what looks unreal like if face is distorted , or transition between "
    "objects is not smooth, or any other unrealistic thing you see in the image."
)


@dataclass
class RegionPrompt:
    """How stage 1's regions go into the describer's prompt (`--regions.*`; YAML: a `regions:` mapping)."""

    enabled: bool = field(default=False, metadata={"help": "Give the describer the detected regions (in the "
                                                           "prompt) and zoomed crops of the top ones."})
    max_regions: int = field(default=6, metadata={"help": "Regions listed in the prompt, at most."})
    crops: int = field(default=2, metadata={"help": "Top regions also shown as zoomed crops (k); 0: none."})
    crop_size: int = field(default=224, metadata={"help": "Side in pixels of each (square) crop."})
    crop_margin: float = field(default=0.25, metadata={"help": "Context around a box in a crop, as a share of the "
                                                               "box's longer side, on each side."})
    order: str = field(default="suspicion", metadata={"choices": ORDERS, "help": "Which regions come first: "
                                                      "suspicion (the artifact map's mean inside the box), "
                                                      "confidence, or area."})
    aspects: bool = field(default=False, metadata={"help": "Also list the aspects stage 1's tagger flags "
                                                           "(realness.dream.aspects), one line 'Aspects to discuss: "
                                                           "lighting, skin.' ('none' when it flags none); trained "
                                                           "with the aspects each target discusses."})
    steer: float = field(default=0.0, metadata={"help": "With aspects, at inference: logit bias towards each "
                                                        "listed aspect the answer has not discussed yet "
                                                        "(describe.steering); 0: plain greedy decoding. Training "
                                                        "ignores it."})


REGIONS_FILE = "regions.json"  # beside an adapter trained with regions: its RegionPrompt


def saved_region_prompt(*folders) -> RegionPrompt | None:
    """The `RegionPrompt` a describer was trained with (`regions.json` in the first of `folders` that has
    one: the adapter's, then the model's), or None (a describer that takes no regions)."""
    for folder in folders:
        if folder and (Path(folder) / REGIONS_FILE).is_file():
            return RegionPrompt(**json.loads((Path(folder) / REGIONS_FILE).read_text()))
    return None


def aspects_line(aspects: Sequence[str]) -> str:
    """The prompt's aspects line: `Aspects to discuss: lighting, skin.` (`none` for no aspects)."""
    return f"Aspects to discuss: {', '.join(aspects) if aspects else 'none'}."


def region_prompt(question: str, regions: Sequence[Region], image_size: tuple[int, int],
                  cfg: RegionPrompt) -> tuple[str, list[Region]]:
    """`(question with the regions line, the regions to crop)`; with no regions, `question` unchanged. With
    `cfg.aspects` and regions that carry aspects (`realness.dream.regions.Regions`), the aspects line comes
    last, also when no region was found."""
    text, cropped = question, []
    shown = rank_regions(regions, cfg.order)[:cfg.max_regions]
    if shown:
        listed = "; ".join(format_region(r.label, to_grid(r.box, image_size), r.score) for r in shown)
        cropped = shown[:cfg.crops]
        example = format_region(shown[0].label, to_grid(shown[0].box, image_size))
        text = (f"{question}\nRegions found (label [x0, y0, x1, y1] on a 0-{GRID} grid, confidence): {listed}.\n"
                + (f"The images after the first zoom in on the first {len(cropped)} of them. " if cropped else "")
                + f"If a claim is about one of them, write its box after the word, as in: the {example} looks warped.")
    aspects = getattr(regions, "aspects", None) if cfg.aspects else None
    if aspects is not None:
        text += f"\n{aspects_line(aspects)}"
    return text, cropped


def crop_regions(image: Image.Image, regions: Sequence[Region], size: int = 224, margin: float = 0.25) -> list[Image.Image]:
    """A square crop around each region's box (its longer side plus `margin` of it on each side, centred on the
    box, kept inside the image where it fits), resized to `size` x `size`."""
    out = []
    w, h = image.size
    for r in regions:
        x0, y0, x1, y1 = r.box
        side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
        side = max(1.0, min(side, w, h))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = min(max(0.0, cx - side / 2), w - side)
        top = min(max(0.0, cy - side / 2), h - side)
        box = tuple(round(v) for v in (left, top, left + side, top + side))
        out.append(image.convert("RGB").crop(box).resize((size, size), Image.Resampling.BICUBIC))
    return out


def parse_claims(text: str) -> tuple[list[dict], list[str]]:
    """`(claims, problems)` of a grounded answer: each well-formed box with the words before it in its
    sentence (`{"claim": ..., "box": [x0, y0, x1, y1]}`, grid units), and one line per malformed box."""
    boxes, problems = find_boxes(text)
    claims = []
    for b in boxes:
        start = max(text.rfind(c, 0, b.start) for c in ".;!?") + 1
        claims.append({"claim": strip_boxes(text[start:b.start]).strip(" ,"), "box": list(b.grid)})
    return claims, problems


def build_messages(question: str = DEFAULT_QUESTION, system: str | None = DEFAULT_SYSTEM,
                   answer: str | None = None, crops: int = 0) -> list[dict]:
    """Chat messages (the image and `crops` zoomed views, then the question; optionally the assistant's answer)
    in the structured-content form that every transformers processor's chat template understands (a crop is
    an image part marked `"crop": True`; templates that do not know the key read it as one more image)."""
    messages = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    images = [{"type": "image"}] + [{"type": "image", "crop": True}] * crops
    messages.append({"role": "user", "content": [*images, {"type": "text", "text": question}]})
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages
