"""`Describer`: describe images with a base VLM plus an optional LoRA adapter, in batches (transformers).

This is the CPU / no-vLLM engine and the reference the vLLM engine is compared with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

from describe.prompt import DEFAULT_QUESTION, DEFAULT_SYSTEM, Answer, parse_answer


class Describer:
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
    """

    def __init__(self, model_id: str, adapter: str | Path | None = None, quantize_4bit: bool = False,
                 dtype: str = "auto", device: str | None = None, merge: bool = False,
                 question: str = DEFAULT_QUESTION, system: str | None = DEFAULT_SYSTEM, max_new_tokens: int = 64,
                 min_new_tokens: int = 0, verdict_guide: str | None = "auto"):
        from describe.modeling import load_base
        from describe.small import resolve_describer
        from describe.verdict import resolve_guide

        model_id, adapter = resolve_describer(model_id, adapter)
        self.guide = resolve_guide(verdict_guide, adapter, model_id if Path(model_id).is_dir() else None)
        from realness.devices import resolve_device

        device = resolve_device(device)
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

    def generate(self, images: Sequence[Image.Image], batch_size: int = 8) -> list[str]:
        """Raw answers, greedy, in input order."""
        from describe.training import generate

        out: list[str] = []
        for start in range(0, len(images), batch_size):
            batch = list(images[start:start + batch_size])
            out += generate(self.model, self.processor, batch, self.question, self.system, self.max_new_tokens,
                            min_new_tokens=self.min_new_tokens, prefixes=self.prefixes(batch))
        return [t.strip() for t in out]

    def prefixes(self, images: Sequence[Image.Image]) -> list[str] | None:
        """Each answer's given first word (the verdict guide's), or None when the model picks its own."""
        return self.guide.prefixes(images) if self.guide is not None else None

    def describe(self, images: Sequence[Image.Image], batch_size: int = 8) -> list[Answer]:
        """Parsed answers (verdict, explanation, contract problems)."""
        return [parse_answer(t) for t in self.generate(images, batch_size)]


def describe_folder(model_id: str, images: str | Path, out: str | Path, adapter: str | Path | None = None,
                    quantize_4bit: bool = False, batch_size: int = 8, max_new_tokens: int = 64,
                    progress: bool = True, verdict_guide: str | None = "auto") -> dict:
    """`realness describe`: a descriptions CSV (`filename, description, verdict, contract_ok, problems`)
    that CORE and DREAM read. Unreadable images are reported and skipped."""
    import csv
    import logging
    import sys

    from tqdm.auto import tqdm

    from realness.images import ImageError, list_images, load_image

    from describe.engines import load_describer

    describer, info = load_describer("transformers", model_id, adapter, quantize_4bit=quantize_4bit,
                                     max_new_tokens=max_new_tokens, verdict_guide=verdict_guide)
    paths = list_images(images)
    failed: dict[str, str] = {}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_ok = 0
    with out.open("w", newline="", encoding="utf-8") as fh, \
            tqdm(total=len(paths), desc="describing", unit="img", disable=not progress, file=sys.stderr) as bar:
        w = csv.writer(fh)
        w.writerow(["filename", "description", "verdict", "contract_ok", "problems"])
        for start in range(0, len(paths), batch_size):
            batch = []
            for p in paths[start:start + batch_size]:
                try:
                    batch.append((p, load_image(p)))
                except ImageError as err:
                    logging.getLogger(__name__).warning("%s", err)
                    failed[p.name] = str(err)
            for (p, _), answer in zip(batch, describer.describe([im for _, im in batch], batch_size)):
                w.writerow([p.name, answer.text, answer.verdict, answer.ok, "; ".join(answer.problems)])
                n_ok += 1
            fh.flush()
            bar.update(len(paths[start:start + batch_size]))
    return {"described": n_ok, "failed": failed, "describer": info}
