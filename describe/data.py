"""Describer training data: images with GPT-written and human descriptions, mixed per source.

Rows come from the realness data layer (`load_raise`, `load_manifest`): `filename, image, description,
source`. A manifest may list the same image several times with different sources. Options:
- `prefer_human`: where an image has a human description, drop its GPT one;
- `weights`: per-source sampling weight, e.g. {"gpt": 1, "human": 3} repeats human rows three times as
  often (fractional weights sample the remainder without replacement, seeded);
- the held-out split is by image, never by row, so no image is on both sides.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np


def prefer_human_rows(rows: list[dict]) -> list[dict]:
    """Drop GPT rows of images that also have a human description."""
    has_human = {r["image"] for r in rows if r["source"] == "human"}
    return [r for r in rows if not (r["source"] != "human" and r["image"] in has_human)]


def mix_sources(rows: list[dict], weights: dict[str, float] | None = None, seed: int = 0) -> list[dict]:
    """Rows repeated per source weight (w = 2.5: every row twice, half of them a third time), shuffled."""
    weights = weights or {}
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_source[r["source"] or "gpt"].append(r)
    out: list[dict] = []
    for source, group in sorted(by_source.items()):
        w = float(weights.get(source, 1.0))
        if w < 0:
            raise ValueError(f"weight of {source!r} must be >= 0, got {w}")
        whole, frac = int(math.floor(w)), w - math.floor(w)
        out += group * whole
        extra = int(round(frac * len(group)))
        out += [group[i] for i in rng.choice(len(group), extra, replace=False)] if extra else []
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def split_by_image(rows: list[dict], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train / held-out rows such that every image's rows fall on one side."""
    images = sorted({r["image"] for r in rows})
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(len(images) * val_fraction))) if val_fraction > 0 else 0
    held = set(rng.permutation(images)[:n_val].tolist())
    return [r for r in rows if r["image"] not in held], [r for r in rows if r["image"] in held]
