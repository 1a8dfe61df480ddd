"""The dataset layer: RAISE folders and user manifests as Hugging Face `datasets`, validated and split.

Every loader returns a `datasets.Dataset` with the same columns:

    filename     the image's file name (unique within a dataset)
    image        absolute path to the image file
    mos          realness opinion score on the dataset's own scale (RAISE: 0-100), float or NaN
    description  text describing the image's visual inconsistencies ("" when not known)
    source       who wrote the description: "gpt", "human" or ""
    split        a split name from the manifest ("" when not given)
    generator    which generator made the image ("real" for a photograph, "" when not known)
    prompt       the prompt the image was generated from ("" when not known)

Rated sets (`RATED_SETS`, `load_rated`) name the datasets with human scores the project trains and validates on:
each knows its MOS scale, how its rows group (AGIQA-3K: by prompt, so no prompt is on both sides of a split) and the
environment variable that points at it.

Validation never drops a row silently: every problem (missing image, NaN score, empty description,
duplicate file name, missing column) is collected with the file and row it concerns and raised together
as one `DataError`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from realness.files import read_jsonl
from realness.images import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)
COLUMNS = ("filename", "image", "mos", "description", "source", "split", "generator", "prompt")
SOURCES = ("gpt", "human", "")


class DataError(ValueError):
    """Problems found in a dataset; `problems` lists one line per bad row or file."""

    def __init__(self, where: str, problems: Sequence[str]):
        self.where = where
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{where}: {len(self.problems)} problem(s)\n{shown}{more}")


def read_table(path: Path, skip_malformed: bool = False) -> list[dict]:
    """Rows of a CSV or JSONL file as dicts; errors (bad JSON, bytes that are not UTF-8) name the file
    and the line. With `skip_malformed` (descriptions, which `realness annotate` and `run` append to and a
    kill can tear), a malformed JSONL line is skipped with one warning naming the file and the line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if skip_malformed and path.suffix.lower() in (".jsonl", ".ndjson"):
        return read_jsonl(path)
    raw = path.read_bytes()

    if path.suffix.lower() in IMAGE_EXTENSIONS or raw[:8].startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF")):
        raise DataError(str(path), ["an image, not a table: give a CSV, JSONL or JSON file here"])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(str(path), [f"line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save the file as UTF-8"]) from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(str(path), [f"line {lineno}: not valid JSON ({err.msg})"]) from None
            if not isinstance(row, dict):
                raise DataError(str(path), [f"line {lineno}: not a JSON object"])
            rows.append(row)
        return rows
    if path.suffix.lower() == ".json":
        return _json_rows(path, text)
    header = text.split("\n", 1)[0]
    # a table saved with ; or tabs (spreadsheets in many locales) is read as such when its header has no comma
    delimiter = next((d for d in ("\t", ";") if "," not in header and d in header), ",")
    csv.field_size_limit(max(csv.field_size_limit(), len(raw) + 1))  # a long description is one cell, not an error
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as err:
        raise DataError(str(path), [f"not a readable CSV table ({err})"]) from None
    extra = [i for i, row in enumerate(rows, 1) if row.pop(None, None) is not None]
    if extra:  # more cells than the header has columns: kept out of every column, and said
        logger.warning("%s: %d row(s) have more cells than the header's %d columns (an unquoted comma? quote such "
                       "cells); the extra cells are ignored: row %s", path, len(extra), len(rows[0]),
                       ", ".join(map(str, extra[:10])) + (" ..." if len(extra) > 10 else ""))
    return rows


def _json_rows(path: Path, text: str) -> list[dict]:
    """A `.json` file: an array of objects, or an object whose one list value is that array."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(str(path), [f"line {err.lineno}: not valid JSON ({err.msg})"]) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list):
        raise DataError(str(path), ["expected a JSON array of objects (one per image), e.g. "
                                    '[{"filename": "a.png", "description": "..."}]'])
    bad = [i for i, row in enumerate(data, 1) if not isinstance(row, dict)]
    if bad:
        raise DataError(str(path), [f"item {i}: not a JSON object" for i in bad])
    return data


def _require_columns(path: Path, rows: list[dict], required: Iterable[str]) -> None:
    present = set(rows[0]) if rows else set()
    missing = [c for c in required if c not in present]
    if missing:
        found = sorted(str(c) for c in present if c is not None)
        raise DataError(str(path), [f"missing column(s) {', '.join(missing)}; found {found}"])


def _to_float(value) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def validate_records(
    records: list[dict],
    where: str,
    *,
    require_mos: bool = True,
    require_description: bool = True,
    check_files: bool = True,
) -> None:
    """Raise one `DataError` listing every bad row; rows are numbered from 1 as in the file."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(records, 1):
        name = r.get("filename") or "?"
        tag = f"row {i} ({name})"
        if name in seen:
            problems.append(f"{tag}: duplicate file name, first seen in row {seen[name]}")
        else:
            seen[name] = i
        if check_files and not Path(r["image"]).is_file():
            problems.append(f"{tag}: image not found at {r['image']}")
        if require_mos and not math.isfinite(r["mos"]):
            problems.append(f"{tag}: score is missing or not a number")
        if require_description and not r["description"].strip():
            problems.append(f"{tag}: empty description")
        if r["source"] not in SOURCES:
            problems.append(f"{tag}: source must be one of gpt/human, got {r['source']!r}")
    if problems:
        raise DataError(where, problems)


def _to_dataset(records: list[dict]) -> datasets.Dataset:
    import datasets

    features = datasets.Features(
        {
            "filename": datasets.Value("string"),
            "image": datasets.Value("string"),
            "mos": datasets.Value("float64"),
            "description": datasets.Value("string"),
            "source": datasets.Value("string"),
            "split": datasets.Value("string"),
            "generator": datasets.Value("string"),
            "prompt": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_list([{c: r.get(c, "") for c in COLUMNS} for r in records], features=features)


def load_raise(
    root: str | Path,
    *,
    descriptions: str | Path | None = None,
    require_description: bool = True,
) -> datasets.Dataset:
    """Load a RAISE-layout folder: `images/`, `ratings.csv` and a descriptions CSV.

    Args:
        root: folder holding `images/`, `ratings.csv` (`filename, MOS_Rating, MOS_ZScore`) and
            `descriptions_gpt41.csv` (`filename, MOS, description`).
        descriptions: another descriptions file (CSV or JSONL with `filename, description`, optional
            `source`), e.g. one written by the describer. Default: `root/descriptions_gpt41.csv`.
        require_description: fail on images that have no description (set False for image-only use).
    """
    root = Path(root)
    ratings_path = root / "ratings.csv"
    ratings = read_table(ratings_path)
    _require_columns(ratings_path, ratings, ("filename", "MOS_Rating"))
    desc_path = Path(descriptions) if descriptions else root / "descriptions_gpt41.csv"
    texts: dict[str, tuple[str, str]] = {}
    if desc_path.is_file() or require_description:
        rows = read_table(desc_path, skip_malformed=True)
        _require_columns(desc_path, rows, ("filename", "description"))
        default_source = "gpt" if descriptions is None else ""
        for row in rows:
            texts[row["filename"]] = ((row["description"] or "").strip(), row.get("source") or default_source)
    records = []
    for row in ratings:
        text, source = texts.get(row["filename"], ("", ""))
        records.append(
            {
                "filename": row["filename"],
                "image": str((root / "images" / row["filename"]).resolve()),
                "mos": _to_float(row["MOS_Rating"]),
                "description": text,
                "source": source,
                "split": "",
                "generator": "real" if row["filename"].startswith("r") else "",
            }
        )
    validate_records(records, str(root), require_description=require_description)
    return _to_dataset(records)


def load_manifest(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    require_mos: bool = True,
    require_description: bool = True,
) -> datasets.Dataset:
    """Load a user manifest (CSV or JSONL) with columns `image, mos, description[, source, split, generator, prompt]`.

    `image` (or `filename`) is a path, relative to `image_root` (default: the manifest's folder) unless absolute.
    `mos` may be left out when `require_mos=False` (scoring new images).
    """
    path = Path(path)
    rows = read_table(path)
    if not rows:
        raise DataError(str(path), ["no rows"])
    if "image" not in rows[0] and "filename" in rows[0]:
        rows = [{**r, "image": r["filename"]} for r in rows]
    required = ["image"] + (["mos"] if require_mos else []) + (["description"] if require_description else [])
    _require_columns(path, rows, required)
    base = Path(image_root) if image_root else path.parent
    records = []
    for row in rows:
        image = Path(str(row.get("image") or ""))
        image = image if image.is_absolute() else base / image
        records.append(
            {
                "filename": image.name,
                "image": str(image.resolve()),
                "mos": _to_float(row.get("mos")),
                "description": str(row.get("description") or "").strip(),
                "source": str(row.get("source") or "").strip().lower(),
                "split": str(row.get("split") or "").strip(),
                "generator": str(row.get("generator") or "").strip(),
                "prompt": str(row.get("prompt") or "").strip(),
            }
        )
    validate_records(records, str(path), require_mos=require_mos, require_description=require_description)
    if not require_mos:  # an empty score means "not known"; a score that is given must be a number
        bad = [f"row {i} ({r['filename']}): score {row.get('mos')!r} is not a number (leave the cell empty when unknown)"
               for i, (r, row) in enumerate(zip(records, rows), 1)
               if not math.isfinite(r["mos"]) and str(row.get("mos") if row.get("mos") is not None else "").strip()]
        if bad:
            raise DataError(str(path), bad)
    return _to_dataset(records)


def manifest_inputs(path: str | Path) -> tuple[list[Path], dict[str, str], dict[str, float]]:
    """A manifest's image paths, with `file name -> description` and `file name -> MOS` where it gives them."""
    ds = load_manifest(path, require_mos=False, require_description=False)
    paths = [Path(p) for p in ds["image"]]
    texts = {p.name: d for p, d in zip(paths, ds["description"]) if d}
    mos = {p.name: float(m) for p, m in zip(paths, ds["mos"]) if m is not None and m == m}
    return paths, texts, mos


def load_descriptions(path: str | Path) -> dict[str, str]:
    """`filename -> description` from a descriptions CSV/JSONL (`filename` or `image`, `description`).

    Raises a `DataError` naming the file (and rows) for an empty file, missing columns or rows without
    a file name. A file name given twice with different descriptions keeps the later row (in a `realness
    annotate` JSONL, the newer annotation) and says so in one warning naming the rows. Rows whose
    `status` is `failed` (annotate's records of images it could not describe) are left out.
    """
    path = Path(path)
    rows = read_table(path, skip_malformed=True)
    if not rows:
        raise DataError(str(path), ["no rows: the descriptions file is empty"])
    key = "filename" if "filename" in rows[0] else "image"
    _require_columns(path, rows, (key, "description"))
    out: dict[str, str] = {}
    row_of: dict[str, int] = {}
    problems, replaced = [], []
    for i, r in enumerate(rows, 1):
        if str(r.get("status") or "ok") != "ok":
            continue
        name, text = Path(str(r.get(key) or "")).name, str(r.get("description") or "").strip()
        if not name:
            problems.append(f"row {i}: no {key}")
            continue
        if name in out and text != out[name]:
            if not text:
                continue  # an empty description never hides a real one
            if out[name]:
                replaced.append(f"{name} (rows {row_of[name]} and {i})")
        out[name], row_of[name] = text, i
    if problems:
        raise DataError(str(path), problems)
    if replaced:
        logger.warning("%s: %d file name(s) given twice with different descriptions; the later row is used: %s",
                       path, len(replaced), ", ".join(replaced[:5]) + (" ..." if len(replaced) > 5 else ""))
    return out


@dataclass(frozen=True)
class Fold:
    """Row indices of one train/validation split."""

    index: int
    train: np.ndarray
    val: np.ndarray


def kfold(n: int, k: int = 5, seed: int = 42) -> list[Fold]:
    """Deterministic k-fold split of `n` rows: the same (n, k, seed) always gives the same folds."""
    if k < 2 or k > n:
        raise ValueError(f"k must be in [2, {n}], got {k}")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, k)
    return [
        Fold(i, np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i])), np.sort(parts[i]))
        for i in range(k)
    ]


def train_val_split(n: int, val_fraction: float = 0.2, seed: int = 42) -> Fold:
    """A seeded random train/validation split of `n` rows."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    return Fold(0, np.sort(order[n_val:]), np.sort(order[:n_val]))


def manifest_splits(ds: datasets.Dataset, train: str = "train", val: str = "val") -> Fold:
    """The split a manifest's own `split` column defines."""
    splits = np.asarray(ds["split"])
    tr, va = np.flatnonzero(splits == train), np.flatnonzero(splits == val)
    if len(tr) == 0 or len(va) == 0:
        raise ValueError(f"manifest needs rows with split={train!r} and split={val!r}")
    return Fold(0, tr, va)


def group_kfold(groups: Sequence[str], k: int = 5, seed: int = 42) -> list[Fold]:
    """Deterministic k-fold split in which every group (an AGIQA-3K prompt, a RAISE image) lies on one side only:
    the groups are shuffled by `seed` and dealt into `k` folds, largest first, each to the fold with fewest rows."""
    groups = np.asarray(groups)
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if k < 2 or k > len(names):
        raise ValueError(f"k must be in [2, {len(names)}] (the number of groups), got {k}")
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]
    fold_of, sizes = np.empty(len(names), dtype=int), np.zeros(k, dtype=int)
    for g in order:
        fold_of[g] = int(np.argmin(sizes))
        sizes[fold_of[g]] += counts[g]
    row_fold = fold_of[inverse]
    return [Fold(i, np.flatnonzero(row_fold != i), np.flatnonzero(row_fold == i)) for i in range(k)]


@dataclass(frozen=True)
class RatedSet:
    """A dataset of images with human opinion scores: where it is, its scale and how its rows group."""

    name: str
    env: str  # the environment variable naming its folder
    mos_range: tuple[float, float]
    group_by: str  # the column no split may cut across: "prompt" or "filename"
    what: str  # what its scores measure
    how_to_get: str
    licence: str


RATED_SETS: dict[str, RatedSet] = {
    "raise": RatedSet(
        "raise", "REALNESS_RAISE_DIR", (0.0, 100.0), "filename",
        "realness, 0-100 (single stimulus); 411 generated images and 99 real photographs (r*)",
        "the RAISE authors' release (arXiv 2505.19233): a folder with images/, ratings.csv, descriptions_gpt41.csv",
        "non-commercial research only",
    ),
    "agiqa3k": RatedSet(
        "agiqa3k", "REALNESS_AGIQA3K_DIR", (0.0, 5.0), "prompt",
        "perceptual quality, 0-5 (mos_quality); 2,982 images of 6 generators for 300 prompts, no photographs",
        "the official lcysyzxdxc/AGIQA-3k-Database links, or the copy in github.com/qiyan111/AIGC (data/ACGIQA-3K/ "
        "and data/data.csv); point the variable at the folder holding data.csv",
        "no licence stated: research only",
    ),
}

AGIQA_GENERATORS = {"attngan": "AttnGAN", "dalle2": "DALL-E 2", "glide": "GLIDE", "midjourney": "Midjourney",
                    "sd1.5": "SD 1.5", "xl2.2": "SDXL"}


def load_agiqa3k(root: str | Path) -> datasets.Dataset:
    """AGIQA-3K (Li et al., 2023): `data.csv` (`name, prompt, ..., mos_quality, ..., mos_align`) and the images in
    `ACGIQA-3K/` (spelled so) or `images/`. `mos` is the quality MOS; the generator comes from the file name
    (`<generator>_<setting>_<nnn>.jpg`), the prompt from the table."""
    root = Path(root)
    table = root / "data.csv"
    rows = read_table(table)
    _require_columns(table, rows, ("name", "prompt", "mos_quality"))
    folder = next((root / d for d in ("ACGIQA-3K", "AGIQA-3K", "images") if (root / d).is_dir()), root / "ACGIQA-3K")
    records = []
    for row in rows:
        name = row["name"]
        family = name.split("_", 1)[0].lower()
        records.append({"filename": name, "image": str((folder / name).resolve()), "mos": _to_float(row["mos_quality"]),
                        "description": "", "source": "", "split": "",
                        "generator": AGIQA_GENERATORS.get(family, family), "prompt": (row["prompt"] or "").strip()})
    validate_records(records, str(table), require_description=False)
    return _to_dataset(records)


def rated_set_folder(name: str) -> Path:
    """The folder of a named rated set, from its environment variable; a clear error saying how to get it."""
    spec = RATED_SETS[name]
    folder = os.environ.get(spec.env)
    if not folder:
        raise FileNotFoundError(f"{name}: set ${spec.env} to its folder (get it from {spec.how_to_get})")
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{name}: ${spec.env}={folder} is not a folder")
    return Path(folder)


def load_rated(name: str, require_description: bool = False) -> tuple[RatedSet, datasets.Dataset]:
    """A rated set by name (`raise`, `agiqa3k`: found through its environment variable) or a manifest path
    (`filename, mos[, generator, prompt, split, description]`; its scale is the range of its scores, its groups its
    prompts where it gives them, else its images)."""
    if name in RATED_SETS:
        folder = rated_set_folder(name)
        ds = load_agiqa3k(folder) if name == "agiqa3k" else load_raise(folder, require_description=require_description)
        return RATED_SETS[name], ds
    ds = load_manifest(name, require_description=require_description)
    mos = np.asarray(ds["mos"], dtype=float)
    group_by = "prompt" if all(ds["prompt"]) else "filename"
    spec = RatedSet(Path(name).stem, "", (float(mos.min()), float(mos.max())), group_by, "scores of the manifest",
                    str(name), "the manifest's own")
    return spec, ds


def rated_folds(spec: RatedSet, ds: datasets.Dataset, k: int = 5, seed: int = 42) -> list[Fold]:
    """k folds of a rated set that respect its grouping (AGIQA-3K: no prompt on both sides)."""
    return group_kfold(ds[spec.group_by], k, seed)
