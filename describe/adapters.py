"""Check, inspect and merge LoRA adapters so that what training writes is what vLLM serves.

A known trap: vLLM silently ignores (or refuses) adapters that carry `modules_to_save`, target modules
it has no LoRA support for, or key names that its weight mapper does not translate. `inspect_adapter`
reads the saved files and reports such problems; `check_adapter` proves the adapter changes the base
model's output; `merge_adapter` writes a full model with the adapter folded in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from describe.chat import generation_inputs
from describe.modeling import load_base
from describe.small import SMALL_DESCRIBER, is_small_describer
from describe.training import generate


def inspect_adapter(adapter: str | Path, model_id: str | None = None) -> dict:
    """Facts about a saved PEFT adapter and a list of `problems` that would stop vLLM from using it.

    For the small describer (`describe.small`, which vLLM does not run) the trained projector that the
    adapter carries as `modules_to_save` is expected, not a problem."""

    own = set()
    if model_id and (str(model_id) == SMALL_DESCRIBER or is_small_describer(model_id)):
        own = {"projector"}
    adapter = Path(adapter)
    cfg_path, weights = adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    problems = []
    if not cfg_path.is_file() or not weights.is_file():
        return {"problems": [f"{adapter}: needs adapter_config.json and adapter_model.safetensors"]}
    cfg = json.loads(cfg_path.read_text())
    with safe_open(str(weights), framework="pt") as fh:
        keys = list(fh.keys())
    if set(cfg.get("modules_to_save") or ()) - own:
        problems.append(f"modules_to_save={cfg['modules_to_save']}: vLLM does not load full module copies")
    non_lora = [k for k in keys if ".lora_A." not in k and ".lora_B." not in k
                and not any(f".{m}." in k for m in own)]
    if non_lora:
        problems.append(f"{len(non_lora)} non-LoRA tensor(s) in the adapter, e.g. {non_lora[0]}")
    if cfg.get("peft_type") != "LORA":
        problems.append(f"peft_type {cfg.get('peft_type')!r} is not LORA")
    modules = sorted({re.sub(r"\.lora_[AB]\.weight$", "", k).rsplit(".", 1)[-1] for k in keys})
    language = [k for k in keys if re.search(r"(language_model|text_model)\.", k)]
    vision = [k for k in keys if re.search(r"(visual|vision_model|vision_tower)\.", k)]
    if not language:
        problems.append("no LoRA weights on the language model")
    return {"rank": cfg.get("r"), "alpha": cfg.get("lora_alpha"), "base_model": cfg.get("base_model_name_or_path"),
            "n_tensors": len(keys), "modules": modules, "language_tensors": len(language),
            "vision_tensors": len(vision), "example_key": keys[0] if keys else None, "problems": problems}


@dataclass
class AdapterConfig:
    """Options of `realness adapter`."""

    action: str = field(metadata={"help": "check: load and compare with the base; merge: write a full model.",
                                  "positional": True})
    describer: str = field(metadata={"help": "Base VLM id or folder.", "aliases": ("model",)})
    adapter: str = field(metadata={"help": "LoRA adapter folder."})
    out: str | None = field(default=None, metadata={"help": "merge: output folder (required for merge)."})


def check_adapter(model_id: str, adapter: str | Path, image=None, max_new_tokens: int = 16) -> dict:
    """Load base and base+adapter; report whether the adapter changes logits and generated text."""
    import torch
    from peft import PeftModel
    from PIL import Image

    image = image or Image.new("RGB", (224, 224), (127, 127, 127))
    model, processor = load_base(model_id, dtype="fp32")
    inputs = generation_inputs(processor, [image])
    with torch.no_grad():
        base_logits = model(**inputs).logits[0, -1].float()
    base_text = generate(model, processor, [image], max_new_tokens=max_new_tokens)[0]
    tuned = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        tuned_logits = tuned(**inputs).logits[0, -1].float()
    tuned_text = generate(tuned, processor, [image], max_new_tokens=max_new_tokens)[0]
    diff = float((tuned_logits - base_logits).abs().max())
    return {**inspect_adapter(adapter, model_id), "max_logit_change": diff, "base_text": base_text, "adapter_text": tuned_text,
            "changes_output": diff > 1e-4}


def merge_adapter(model_id: str, adapter: str | Path, out: str | Path, dtype: str = "auto") -> Path:
    """Fold the adapter into the base weights and save a full model (+ processor) to `out`."""
    from peft import PeftModel

    if str(model_id) == SMALL_DESCRIBER or is_small_describer(model_id):
        raise ValueError(f"{model_id}: the small describer saves only its projector (its frozen parts load from their "
                         "packages), so a merged copy cannot be saved; use it with --adapter, or Describer(merge=True) "
                         "to merge in memory")
    model, processor = load_base(model_id, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out = Path(out)
    merged.save_pretrained(out)
    processor.save_pretrained(out)
    return out
