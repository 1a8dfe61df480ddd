"""Read a realness description: its verdict (yes / no / somewhat) and the claims it makes.

A RAISE-TD description reads "Yes, the hat appears unusually large and may not sit naturally on the
dog's head; the integration between the hat and fur looks slightly unnatural." Each claim (split at
sentence ends, semicolons and ", and"/"while"-style joints) gets its own map, so one hot spot does not
drown another; the verdict decides whether there is anything to map at all.
"""

from __future__ import annotations

import re

from realness.answers import parse_verdict  # one verdict parser for the whole project

# Sentence ends, semicolons, and clause joints that start a new claim.
_SPLIT = re.compile(r"(?<=[.!?;])\s+|;\s*|,\s*(?:and|while|but|whereas)\s+|\s+(?:while|whereas)\s+", re.IGNORECASE)
MIN_WORDS = 2
__all__ = ["parse_verdict", "split_phrases"]


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
