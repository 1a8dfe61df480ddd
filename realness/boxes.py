"""Boxes in words: how a region is written in a describer's prompt and a grounded claim in its answer.

One format for every describer (the small one and the Qwen-VL family alike), readable as plain text so no
special token can be lost on decoding:

    a box       [x0, y0, x1, y1]   four integers on the 0-1000 grid of the image (Qwen2-VL's grounding
                                   convention; x0 < x1, y0 < y1), e.g. [412, 180, 590, 420]
    a region    face [412, 180, 590, 420] 0.99   label, box, detector confidence (in the prompt)
    a claim     "the face [412, 180, 590, 420] appears warped"   the box follows the word it locates

`describe.prompt` writes prompts with regions and reads grounded claims with these functions; they live in
the base layer because DREAM (a layer below the describers) reads the same boxes. `find_boxes` reports
each bracket that looks like a box and what is wrong with a malformed one; `strip_boxes` gives the text as
a reader (or CORE's text encoder, or the mention counts) should see it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

GRID = 1000
# A bracket holding only numbers, signs, commas and spaces, with at least one digit: a box, maybe malformed.
_BRACKET = re.compile(r"\s?\[([\d\s,.\-+]*\d[\d\s,.\-+]*)\]")


class BoxError(ValueError):
    """A malformed box; the message says what is wrong with it."""


@dataclass(frozen=True)
class Box:
    """A box on the 0-1000 grid found in a text, with where it stands (`start`, `end`: character offsets)."""

    x0: int
    y0: int
    x1: int
    y1: int
    start: int = 0
    end: int = 0

    @property
    def grid(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)

    def pixels(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The box in pixels of an image of (width, height) `size`."""
        return from_grid(self.grid, size)


def to_grid(box: Sequence[float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A pixel box `(x0, y0, x1, y1)` of an image of (width, height) `size` on the 0-1000 grid, clipped to it."""
    w, h = size
    x0, y0, x1, y1 = (min(GRID, max(0, round(v / s * GRID))) for v, s in zip(box, (w, h, w, h)))
    return (x0, y0, max(x1, min(GRID, x0 + 1)), max(y1, min(GRID, y0 + 1)))


def from_grid(box: Sequence[int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    w, h = size
    return (box[0] / GRID * w, box[1] / GRID * h, box[2] / GRID * w, box[3] / GRID * h)


def format_box(box: Sequence[int]) -> str:
    """`[x0, y0, x1, y1]` (grid integers)."""
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


def format_region(label: str, box: Sequence[int], score: float | None = None) -> str:
    """`face [412, 180, 590, 420] 0.99` (the confidence left out when None)."""
    return f"{label} {format_box(box)}" + (f" {score:.2f}" if score is not None else "")


def check_box(values: Sequence[str | int | float]) -> tuple[int, int, int, int]:
    """Four grid integers from a box's parts, or `BoxError` naming what is wrong."""
    if len(values) != 4:
        raise BoxError(f"a box has 4 numbers [x0, y0, x1, y1], got {len(values)}")
    out = []
    for v in values:
        try:
            number = float(v)
        except ValueError:
            raise BoxError(f"box coordinate {str(v)!r} is not a number") from None
        if number != int(number):
            raise BoxError(f"box coordinate {v} is not a whole number (the grid is 0-{GRID})")
        if not 0 <= number <= GRID:
            raise BoxError(f"box coordinate {int(number)} is outside the 0-{GRID} grid")
        out.append(int(number))
    x0, y0, x1, y1 = out
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"box {format_box(out)} is empty or reversed (needs x0 < x1 and y0 < y1)")
    return x0, y0, x1, y1


def parse_box(text: str) -> tuple[int, int, int, int]:
    """`"[412, 180, 590, 420]"` -> (412, 180, 590, 420); anything else raises `BoxError`."""
    m = _BRACKET.fullmatch(text.strip()) or _BRACKET.fullmatch(" " + text.strip())
    if not m:
        raise BoxError(f"{text!r} is not a box [x0, y0, x1, y1]")
    return check_box([p.strip() for p in m.group(1).split(",") if p.strip()] if m.group(1).strip() else [])


def find_boxes(text: str) -> tuple[list[Box], list[str]]:
    """`(boxes, problems)`: every well-formed box in `text`, in order, and one line per malformed one."""
    boxes, problems = [], []
    for m in _BRACKET.finditer(text):
        parts = [p.strip() for p in m.group(1).split(",")]
        try:
            boxes.append(Box(*check_box([p for p in parts if p]), start=m.start(), end=m.end()))
        except BoxError as err:
            problems.append(f"malformed box {m.group(0).strip()}: {err}")
    return boxes, problems


_OPEN_BOX = re.compile(r"\s*\[[\d\s,.]*$")


def drop_open_box(text: str) -> str:
    """`text` without a box that generation was cut off inside (a trailing `[` never closed, as a token cap
    leaves it): what every engine returns, so a cut answer never ends in a broken box."""
    return _OPEN_BOX.sub("", text.strip())


def strip_boxes(text: str) -> str:
    """The text without its boxes (well-formed or not), as a reader should see it."""
    if not _BRACKET.search(text):
        return text
    return re.sub(r"\s+([,.;:!?])", r"\1", _BRACKET.sub("", text)).strip()
