"""`realness describe`: a descriptions CSV for a folder of images (the transformers engine, not resumable;
`realness annotate` is the resumable, served and Ray version)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from describe.engines import DEFAULT_DESCRIBER, load_describer
from describe.small import SMALL_DESCRIBER
from describe.verdict import HELP as GUIDE_HELP
from realness.images import ImageError, list_images, load_image


@dataclass
class DescribeConfig:
    """Options of `realness describe`."""

    images: str = field(metadata={"help": "Folder of images."})
    describer: str = field(default=DEFAULT_DESCRIBER, metadata={
        "help": f"Describer VLM id or folder, or {SMALL_DESCRIBER} for the bundled offline describer (when the "
                "default cannot be downloaded, that one stands in).", "aliases": ("model",)})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder (none: the base model)."})
    out: str = field(default="descriptions.csv", metadata={"help": "Output CSV for score-core / map."})
    quantize_4bit: bool = field(default=False, metadata={"help": "Load the base in 4-bit NF4."})
    batch_size: int = field(default=8, metadata={"help": "Images per generate call."})
    max_tokens: int = field(default=64, metadata={"help": "Description length cap in tokens.",
                                                  "aliases": ("max_new_tokens",)})
    verdict_guide: str = field(default="auto", metadata={"help": GUIDE_HELP})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


def describe_folder(cfg: DescribeConfig) -> dict:
    """`realness describe`: a descriptions CSV (`filename, description, verdict, contract_ok, problems`)
    that CORE and DREAM read. Unreadable images are reported and skipped."""
    model_id, images, out, adapter, quantize_4bit = cfg.describer, cfg.images, cfg.out, cfg.adapter, cfg.quantize_4bit
    batch_size, max_new_tokens, progress = cfg.batch_size, cfg.max_tokens, cfg.progress
    verdict_guide = cfg.verdict_guide
    import csv
    import logging
    import sys

    from tqdm.auto import tqdm


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
