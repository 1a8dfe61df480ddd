"""Read a realness description: its verdict (yes / no / somewhat) and the claims it makes.

A RAISE-TD description reads "Yes, the hat appears unusually large and may not sit naturally on the
dog's head; the integration between the hat and fur looks slightly unnatural." Each claim (split at
sentence ends, semicolons and ", and"/"while"-style joints) gets its own map, so one hot spot does not
drown another; the verdict decides whether there is anything to map at all.
"""

from __future__ import annotations

import re

VERDICTS = ("yes", "no", "somewhat")
_VERDICT = re.compile(r"^\s*(yes|no|somewhat)\b[\s,.:;!\-–—]*", re.IGNORECASE)
# Sentence ends, semicolons, and clause joints that start a new claim.
_SPLIT = re.compile(r"(?<=[.!?;])\s+|;\s*|,\s*(?:and|while|but|whereas)\s+|\s+(?:while|whereas)\s+", re.IGNORECASE)
MIN_WORDS = 2


def parse_verdict(description: str) -> tuple[str, str]:
    """`(verdict, rest)`: verdict is yes/no/somewhat, or "" when the text does not start with one."""
    if not description or not description.strip():
        raise ValueError("empty description: nothing to map")
    m = _VERDICT.match(description)
    if not m:
        return "", description.strip()
    return m.group(1).lower(), description[m.end():].strip()


def split_phrases(text: str) -> list[str]:
    """The separate claims of a description body; short fragments stay with their neighbour."""
    parts = [p.strip(" ,.;:!?") for p in _SPLIT.split(text) if p and p.strip(" ,.;:!?")]
    phrases: list[str] = []
    for part in parts:
        if phrases and len(part.split()) < MIN_WORDS:
            phrases[-1] = f"{phrases[-1]} {part}"
        else:
            phrases.append(part)
    return phrases or ([text.strip()] if text.strip() else [])
