"""The transformers engine, `Describer`: a base VLM plus an optional LoRA adapter, generating in batches.

This is the CPU / no-vLLM engine and the reference the vLLM engine is compared with.

A describer trained with regions (its adapter's `regions.json`, `describe.prompt.RegionPrompt`) is prompted with
each image's stage-1 regions and crops: the caller's (`realness run` runs stage 1 once for the describer and
DREAM), or, when none are given, found here with `realness.dream.evidence.EvidenceFinder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from describe.grounding import TakesRegions
from describe.modeling import load_base
from describe.prompt import DEFAULT_QUESTION, DEFAULT_SYSTEM, RegionPrompt, saved_region_prompt
from describe.small import resolve_describer
from describe.training import generate
from describe.verdict import resolve_guide
from realness.answers import Answer, parse_answer
from realness.boxes import drop_open_box
from realness.devices import resolve_device


class Describer(TakesRegions):
    """Base model (+ adapter) that answers the realness question for images.

    Args:
        model_id: base model id or folder.
        adapter: a PEFT LoRA folder (as written by training), or None for the base model.
        quantize_4bit: load the base in 4-bit NF4.
        merge: merge the adapter into the weights after loading (faster generation).
        min_new_tokens: never stop before this many tokens (benchmarks set it to max_new_tokens).
        verdict_guide: "auto" (the `verdict.json` in the adapter's or the model's folder, if any: the bundled
            small describer has one), "none", or a guide file: image-only CORE then sets each answer's verdict
            and the model writes the rest (`describe.verdict`).
        regions: the region-aware prompt (`RegionPrompt`); "auto" (default): the adapter's or model's
            `regions.json`, if any; None: the plain prompt.
    """

    def __init__(self, model_id: str, adapter: str | Path | None = None, quantize_4bit: bool = False,
                 dtype: str = "auto", device: str | None = None, merge: bool = False,
                 question: str = DEFAULT_QUESTION, system: str | None = DEFAULT_SYSTEM, max_new_tokens: int = 64,
                 min_new_tokens: int = 0, verdict_guide: str | None = "auto", regions: RegionPrompt | str | None = "auto"):
        model_id, adapter = resolve_describer(model_id, adapter)
        self.guide = resolve_guide(verdict_guide, adapter, model_id if Path(model_id).is_dir() else None)
        self.regions = saved_region_prompt(adapter, model_id) if regions == "auto" else regions

        self.device = device = resolve_device(device)
        if self.guide is not None:
            self.guide.device = device  # image-only CORE beside the describer, not on the CPU behind a GPU
        self.model, self.processor = load_base(model_id, quantize_4bit, dtype,
                                               device_map=device if quantize_4bit else None)
        if adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
            if merge:
                self.model = self.model.merge_and_unload()
        if not quantize_4bit:
            self.model.to(device)
        self.model.eval()
        self.question, self.system, self.max_new_tokens = question, system, max_new_tokens
        self.min_new_tokens = min_new_tokens

    def close(self) -> None:
        self.close_finder()

    def generate(self, images: Sequence[Image.Image], batch_size: int = 8, regions: Sequence | None = None) -> list[str]:
        """Raw answers, greedy, in input order; `regions` (one list per image, stage 1's) when this describer
        takes them (found here if not given)."""
        regions = self.regions_for(images, regions)
        out: list[str] = []
        for start in range(0, len(images), batch_size):
            batch = list(images[start:start + batch_size])
            out += generate(self.model, self.processor, batch, self.question, self.system, self.max_new_tokens,
                            min_new_tokens=self.min_new_tokens, prefixes=self.prefixes(batch),
                            regions=regions[start:start + batch_size] if regions is not None else None,
                            regions_cfg=self.regions)
        return [drop_open_box(t) for t in out]

    def prefixes(self, images: Sequence[Image.Image]) -> list[str] | None:
        """Each answer's given first word (the verdict guide's), or None when the model picks its own."""
        return self.guide.prefixes(images) if self.guide is not None else None

    def describe(self, images: Sequence[Image.Image], batch_size: int = 8, regions: Sequence | None = None) -> list[Answer]:
        """Parsed answers (verdict, explanation, contract problems)."""
        return [parse_answer(t) for t in self.generate(images, batch_size, regions)]
