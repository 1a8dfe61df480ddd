"""Real-size random models from the published configurations: sizes, tokenizer ids, loading, one forward."""

import json

import pytest
import torch
from PIL import Image

from describe.realsize import PUBLISHED_PARAMETERS, REALSIZE, count_parameters, qwen25_tokenizer
from describe.tiny import QWEN_TEMPLATE


def test_qwen25_vl_3b_config_builds_the_published_size():
    n = count_parameters("qwen2.5-vl-3b")
    assert abs(n - PUBLISHED_PARAMETERS["qwen2.5-vl-3b"]) / PUBLISHED_PARAMETERS["qwen2.5-vl-3b"] < 0.01
    with pytest.raises(ValueError, match="unknown real-size model"):
        count_parameters("qwen2.5-vl-300b")


def test_qwen25_tokenizer_has_the_real_vocabulary_and_special_ids():
    tok = qwen25_tokenizer(QWEN_TEMPLATE)
    config = json.loads((REALSIZE["qwen2.5-vl-3b"] / "config.json").read_text())
    assert len(tok) == 151_665 <= config["vocab_size"]
    for key, token in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
                       ("eos_token_id", "<|im_end|>"), ("bos_token_id", "<|endoftext|>")]:
        assert tok.convert_tokens_to_ids(token) == config[key], key
    text = "Yes, the hands look merged; ümlaut ✓."
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text and max(ids) < 151_643 and len(ids) < len(text.encode())


@pytest.mark.slow
def test_paper_core_has_the_published_sizes_and_reloads(tmp_path):
    from realness.core import CoreModel
    from realness.core.realsize import PUBLISHED_PARAMETERS as CORE_SIZES
    from realness.core.realsize import paper_core_random

    model = paper_core_random(tmp_path / "parts")
    assert sum(p.numel() for p in model.image_backbone.parameters()) == CORE_SIZES["image_backbone"]
    assert sum(p.numel() for p in model.text_encoder.parameters()) == CORE_SIZES["text_encoder"]
    assert len(model.tokenizer) == 30_522 and model.head.in_features == 2048 + 768
    model.save_pretrained(tmp_path / "core")
    again = CoreModel.from_pretrained(tmp_path / "core")
    images = [Image.new("RGB", (128, 96), (200, 30, 30)), Image.new("RGB", (96, 128), (30, 30, 200))]
    texts = ["Yes, w1 w2 w3.", "No, w4."]
    torch.testing.assert_close(model.eval().predict(images, texts), again.predict(images, texts))


@pytest.mark.slow
def test_qwen25_vl_3b_loads_through_from_pretrained_and_runs_one_forward(tmp_path):
    """7.5 GB written and read back (bf16): the loading path users take, at the default describer's size."""
    from describe.chat import generation_inputs
    from describe.modeling import load_base
    from describe.realsize import build_realsize

    folder = build_realsize("qwen2.5-vl-3b", tmp_path / "qwen2.5-vl-3b")
    model, processor = load_base(str(folder), dtype="bf16")
    assert sum(p.numel() for p in model.parameters()) == count_parameters("qwen2.5-vl-3b")
    assert model.config.vision_config.fullatt_block_indexes == [7, 15, 23, 31]
    inputs = generation_inputs(processor, [Image.new("RGB", (112, 84), (120, 60, 30))])  # reduced image: 4x3 patches of 28
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], 151_936) and torch.isfinite(logits).all()
    assert int(inputs["image_grid_thw"].prod()) == 6 * 8  # 84x112 pixels -> 6x8 patches of 14


def test_qlora_quantises_the_language_model_alone_at_real_size():
    """Qwen2.5-VL-3B built from its real configuration on the meta device, converted as `from_pretrained` converts
    it under `describe.modeling.quantization_config`: the 252 language-model projections become NF4, the 162
    Linear layers of the vision tower and the output layer stay in bf16 (transformers' defaults alone quantise the
    tower: issue #43)."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    import torch
    from transformers.integrations import replace_with_bnb_linear
    from transformers.quantizers.base import HfQuantizer

    from describe.modeling import quantization_config
    from describe.realsize import _config, _model_class

    config = _config("qwen2.5-vl-3b")
    with torch.device("meta"):
        model = _model_class(config)._from_config(config)
        q = quantization_config()
        skip = HfQuantizer.get_modules_to_not_convert(model, q.llm_int8_skip_modules, model._keep_in_fp32_modules)
        model = replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=q)

    def nf4(prefix):
        return sum(isinstance(m, bnb.nn.Linear4bit) for name, m in model.named_modules() if name.startswith(prefix))

    assert nf4("model.language_model") == 252
    assert nf4("model.visual") == 0 and nf4("lm_head") == 0
    assert sum(isinstance(m, torch.nn.Linear) and not isinstance(m, bnb.nn.Linear4bit)
               for name, m in model.named_modules() if name.startswith("model.visual")) == 162
