"""DREAM configuration.

Re-implements DREAM from Biswas, Kaushik, Paul (arXiv 2509.13289): CLIP ViT-B/32 similarity between
image regions and the description of what looks unreal. The paper slides a 64 px window (stride 8-32),
embeds each crop with the full image encoder, compares it with the whole description, averages per
pixel and min-max normalises. Kept as `method="window"`. Changed here (all switchable): one dense
forward pass (`method="dense"`, ClearCLIP-style patch embeddings), one map per claim of the
description, contrast against a neutral prompt, and flat maps for "No" answers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

METHODS = ("dense", "window")
SOURCES = ("auto", "clip", "evidence")
DETECTORS = ("face", "hand", "person", "text")
DENSE_FIXES = ("clearclip", "maskclip", "none")  # realness.dream.clip's, listed here so the config imports no torch
COMBINE = ("mean", "max")


@dataclass
class DreamConfig:
    """How maps are computed and drawn."""

    source: str = field(default="auto", metadata={"help": "What draws the maps: clip (DREAM's CLIP similarity), "
                                                          "evidence (the artifact map sharpened by detected faces, "
                                                          "hands, people and text; offline), or auto: clip when the "
                                                          "CLIP loads, else evidence."})
    artifact_model: str = field(default="offline/artifact-map", metadata={"help": "Evidence maps: the artifact map (a "
                                                                                  "bundled name or a folder from "
                                                                                  "`realness train-maps`)."})
    detectors: tuple[str, ...] = field(default=DETECTORS, metadata={"help": "Evidence maps: region detectors to run "
                                                                            "(face, hand, person, text)."})
    aspect_model: str = field(default="offline/aspect-tagger", metadata={"help": "Stage 1 for a describer trained "
                                                                                 "with aspects: the aspect tagger (a "
                                                                                 "bundled name or a folder from "
                                                                                 "training/train_aspect_tagger.py)."})
    model: str = field(default="ViT-B-32", metadata={
        "flag": "clip", "aliases": ("model",),
        "help": "open_clip architecture name."})
    pretrained: str | None = field(default="openai", metadata={
        "flag": "clip_pretrained", "aliases": ("pretrained",),
        "help": "open_clip weights tag or a local weights file."})
    model_config_dir: str | None = field(default=None, metadata={
        "flag": "clip_config_dir", "aliases": ("model_config_dir",),
        "help": "Folder of extra open_clip architecture JSON files."})
    method: str = field(default="dense", metadata={"help": "dense (one pass, patch embeddings) or window (the paper's "
                                                           "sliding crops)."})
    dense_fix: str = field(default="clearclip", metadata={"help": "Last-block fix for patch embeddings: clearclip, "
                                                                  "maskclip or none."})
    dense_long_side: int = field(default=448, metadata={"help": "Dense mode: resize the longer image side to this "
                                                                "(rounded to the patch size)."})
    window: int = field(default=64, metadata={"help": "Window mode: crop size in pixels of the working image."})
    stride: int = field(default=16, metadata={"help": "Window mode: step between crops in pixels."})
    window_long_side: int = field(default=512, metadata={"help": "Window mode: resize the longer side to this before "
                                                                 "cropping."})
    crop_batch: int = field(default=64, metadata={"help": "Window mode: crops per forward pass."})
    split_phrases: bool = field(default=True, metadata={"help": "One map per claim of the description (else the whole "
                                                                "text)."})
    contrast: bool = field(default=True, metadata={"help": "Score = similarity to the flaw minus similarity to the "
                                                           "neutral prompt."})
    neutral_prompt: str = field(default="a normal, realistic photo.", metadata={"help": "The prompt flaws are "
                                                                                        "contrasted against."})
    combine: str = field(default="mean", metadata={"help": "How phrase maps combine: mean or max."})
    flat_for_no: bool = field(default=True, metadata={"help": "A 'No' description gives a flat zero map and flat=True."})
    max_phrases: int = field(default=16, metadata={"help": "Map at most this many claims of a description (the first "
                                                           "ones); bounds time and memory."})
    max_description_chars: int = field(default=4000, metadata={"help": "Read at most this many characters of a "
                                                                       "description."})
    map_long_side: int = field(default=512, metadata={"help": "Maps are computed and stored with the longer side at "
                                                              "most this many pixels (never upscaled); "
                                                              "RealnessMap.full_size() upsamples on demand."})
    colormap: str = field(default="hot", metadata={"help": "Matplotlib colour map for heatmaps and overlays."})
    alpha: float = field(default=0.5, metadata={"help": "Overlay opacity of the heatmap."})

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        self.detectors = tuple(self.detectors)
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; choose from {DETECTORS}")
        if self.dense_fix not in DENSE_FIXES:  # checked here, not after a whole run's scoring
            raise ValueError(f"dense_fix must be one of {DENSE_FIXES}, got {self.dense_fix!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, got {self.combine!r}")
        if self.max_phrases < 1 or self.max_description_chars < 1 or self.map_long_side < 8:
            raise ValueError("max_phrases and max_description_chars must be >= 1, map_long_side >= 8")
        if self.window < 8 or self.stride < 1:
            raise ValueError("window must be >= 8 px and stride >= 1 px")

    def to_dict(self) -> dict:
        return asdict(self)
