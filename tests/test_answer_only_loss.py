"""Describer training's answer-only loss (logits only where the next token is labelled) equals the model's own
full-vocabulary loss, and its gradients reach the LoRA weights; QLoRA keeps the embedding in bf16."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

from conftest import DESCRIBER_PAIRS as PAIRS  # noqa: E402
from conftest import colour_image  # noqa: E402


def _batch(processor):
    from describe.chat import TrainCollator

    return TrainCollator(processor)([{"image": colour_image(c), "answer": t} for c, t in PAIRS[:3]])


@pytest.fixture(scope="module")
def small_base(tmp_path_factory):
    from describe.small import build_small_describer

    return build_small_describer(tmp_path_factory.mktemp("small") / "base")  # SmolLM2-135M from its package


@pytest.mark.parametrize("family", ["tiny_vlm", "tiny_qwen25vl", "small_base"])
def test_answer_only_loss_equals_the_full_loss_and_trains_lora(request, family):
    from describe.modeling import add_lora, load_base
    from describe.training import answer_only_loss

    model, processor = load_base(str(request.getfixturevalue(family)), dtype="fp32")
    model = add_lora(model)
    batch = _batch(processor)
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert 0 < labelled < batch["labels"].numel() // 2  # most positions are prompt: the saving is real
    full = model(**batch).loss
    loss, out = answer_only_loss(model, batch)
    torch.testing.assert_close(loss, full, rtol=1e-5, atol=1e-6)
    keep = (batch["labels"][:, 1:] != -100).any(0).sum()
    assert out.logits.shape[1] == keep < batch["input_ids"].shape[1]  # logits at the answer positions only
    # with the Trainer's token count across accumulation steps: a sum over this batch divided by that count
    half, _ = answer_only_loss(model, batch, num_items_in_batch=torch.tensor(2 * labelled))
    torch.testing.assert_close(half, full / 2, rtol=1e-5, atol=1e-6)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_qlora_keeps_what_is_not_quantised_in_bf16(tiny_qwen25vl):
    pytest.importorskip("bitsandbytes")
    from describe.modeling import add_lora, load_base
    from describe.training import answer_only_loss

    model, processor = load_base(str(tiny_qwen25vl), quantize_4bit=True)
    model = add_lora(model, gradient_checkpointing=True)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16  # peft's preparation made it float32
    assert not model.get_input_embeddings().weight.requires_grad
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)
    model.train()
    loss, _ = answer_only_loss(model, _batch(processor))
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
