"""The describer on tiny random Qwen2-VL and Qwen2.5-VL (the default family) built offline: labels, LoRA/QLoRA
overfitting, adapters, merging."""

import csv
import json
from collections import Counter

import pytest
import torch

pytest.importorskip("peft")

from conftest import DESCRIBER_PAIRS as PAIRS
from conftest import colour_image as _image

from describe.chat import IGNORE, TrainCollator
from describe.data import mix_sources, prefer_human_rows, split_by_image
from describe.prompt import DEFAULT_QUESTION, build_messages
from realness.answers import parse_answer


@pytest.mark.parametrize(
    "text,verdict,ok",
    [
        ("Yes, the face is distorted.", "yes", True),
        ("somewhat: odd shadows", "somewhat", True),
        ("No.", "no", True),
        ("No, nothing looks unrealistic in this image.", "no", True),
        ("The face is distorted.", "", False),
        ("Yes.", "yes", False),
        ("Yes, " + "very " * 40 + "odd.", "yes", False),
        ("", "", False),
    ],
)
def test_answer_contract(text, verdict, ok):
    a = parse_answer(text)
    assert (a.verdict, a.ok) == (verdict, ok)
    if ok:
        assert not a.problems
    else:
        assert a.problems


FAMILIES = {"qwen2-vl": ("tiny_vlm", "<|im_start|>assistant\n", "<|im_end|>", "<|image_pad|>"),
            "qwen2.5-vl": ("tiny_qwen25vl", "<|im_start|>assistant\n", "<|im_end|>", "<|image_pad|>"),
            "idefics3": ("tiny_idefics3", "Assistant:", "<end_of_utterance>", "<image>")}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_labels_cover_exactly_the_answer(request, family):
    from transformers import AutoProcessor

    fixture, header, end_of_turn, image_token = FAMILIES[family]
    processor = AutoProcessor.from_pretrained(request.getfixturevalue(fixture))
    batch = TrainCollator(processor)([{"image": _image(c), "answer": t} for c, t in PAIRS[:2]] +
                                     [{"image": _image((0, 0, 0)).resize((84, 56)), "answer": PAIRS[2][1]}])
    eos = processor.tokenizer.convert_tokens_to_ids(end_of_turn)
    for i, (_, text) in enumerate(PAIRS[:3]):
        labels = batch["labels"][i]
        kept = labels[labels != IGNORE]
        assert processor.tokenizer.decode(kept[:-1]).strip() == text and kept[-1].item() == eos
        positions = (labels != IGNORE).nonzero().ravel()
        assert (positions.diff() == 1).all()  # one contiguous span ...
        prompt = batch["input_ids"][i, : positions[0]]
        assert (prompt == processor.tokenizer.convert_tokens_to_ids(image_token)).any()  # ... after the image
        assert processor.tokenizer.decode(prompt).endswith(header)
        assert (labels[batch["attention_mask"][i] == 0] == IGNORE).all()


def test_messages_use_the_papers_question():
    msgs = build_messages(answer="No.")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[1]["content"][0] == {"type": "image"} and msgs[1]["content"][1]["text"] == DEFAULT_QUESTION
    assert DEFAULT_QUESTION.startswith("Is there anything unrealistic in this image? yes or no or somewhat,if yes")


def test_source_mixing_and_split_by_image():
    rows = [{"image": f"g{i}.png", "description": "x", "source": "gpt"} for i in range(40)]
    rows += [{"image": f"h{i}.png", "description": "y", "source": "human"} for i in range(20)]
    mixed = mix_sources(rows, {"gpt": 1, "human": 3}, seed=1)
    counts = Counter(r["source"] for r in mixed)
    assert counts == {"gpt": 40, "human": 60}
    half = Counter(r["source"] for r in mix_sources(rows, {"gpt": 0.5, "human": 2.5}, seed=1))
    assert half == {"gpt": 20, "human": 50}
    assert len({r["image"] for r in mix_sources(rows, {"gpt": 0.5}, seed=1) if r["source"] == "gpt"}) == 20
    both = rows + [{"image": "g0.png", "description": "human says", "source": "human"}]
    kept = prefer_human_rows(both)
    assert [r["description"] for r in kept if r["image"] == "g0.png"] == ["human says"]
    train, held = split_by_image(both, 0.2, seed=0)
    assert not {r["image"] for r in train} & {r["image"] for r in held}
    assert len({r["image"] for r in held}) == 12  # 20 % of 60 images, both g0 rows on one side


def _train(tiny_vlm, manifest, out, **over):
    from describe.training import DescriberTrainConfig, train_describer

    settings = dict(data=str(manifest), model_id=str(tiny_vlm), output_dir=str(out), val_fraction=0, lora_r=16,
                    lora_alpha=32, lora_dropout=0.0, gradient_checkpointing=False, max_steps=80, batch_size=4,
                    grad_accum=1, lr=3e-3, warmup_ratio=0.0, num_workers=0, save_steps=1000, logging_steps=20,
                    dtype="fp32")
    cfg = DescriberTrainConfig.from_flat(**{**settings, **over})
    return train_describer(cfg)


QWEN_FAMILIES = ["tiny_vlm", "tiny_qwen25vl"]  # Qwen2-VL and Qwen2.5-VL (window attention, gated vision MLP)


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_lora_overfits_four_pairs_and_reproduces_them(request, family, pairs_manifest, tmp_path):
    from describe.adapters import inspect_adapter, merge_adapter
    from describe.engines.transformers import Describer

    tiny_vlm = request.getfixturevalue(family)
    adapter = _train(tiny_vlm, pairs_manifest, tmp_path / "run")
    log = json.loads((tmp_path / "run" / "checkpoint-80" / "trainer_state.json").read_text())["log_history"]
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses[-1] < 0.05 < losses[0]
    images = [_image(c) for c, _ in PAIRS]
    tuned = Describer(str(tiny_vlm), adapter, max_new_tokens=24)
    assert tuned.generate(images) == [t for _, t in PAIRS]
    assert [a.verdict for a in tuned.describe(images)] == ["yes", "no", "somewhat", "yes"]
    base = Describer(str(tiny_vlm), max_new_tokens=24)
    assert base.generate(images) != [t for _, t in PAIRS]
    # Standard PEFT files, LoRA only, on the language model: what vLLM's --lora-modules loads.
    info = inspect_adapter(adapter)
    assert info["problems"] == [] and info["vision_tensors"] == 0
    assert set(info["modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # Reloaded adapter and merged model give the same outputs.
    reloaded = Describer(str(tiny_vlm), adapter, max_new_tokens=24)
    merged_dir = merge_adapter(str(tiny_vlm), adapter, tmp_path / "merged", dtype="fp32")
    merged = Describer(str(merged_dir), max_new_tokens=24)
    from describe.chat import generation_inputs

    inputs = generation_inputs(tuned.processor, images)
    with torch.no_grad():
        a, b = tuned.model(**inputs).logits, merged.model(**inputs).logits
        c = reloaded.model(**inputs).logits
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert merged.generate(images) == [t for _, t in PAIRS]


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_qlora_4bit_overfits_too(request, family, pairs_manifest, tmp_path):
    pytest.importorskip("bitsandbytes")
    tiny_vlm = request.getfixturevalue(family)
    from describe.engines.transformers import Describer

    # Gradient checkpointing on, as the real default: k-bit preparation must keep gradients flowing.
    adapter = _train(tiny_vlm, pairs_manifest, tmp_path / "qrun", quantize_4bit=True, max_steps=100,
                     gradient_checkpointing=True)
    tuned = Describer(str(tiny_vlm), adapter, quantize_4bit=True, max_new_tokens=24)
    assert tuned.generate([_image(c) for c, _ in PAIRS]) == [t for _, t in PAIRS]


def test_eval_samples_and_resume(tiny_vlm, pairs_manifest, tmp_path):
    out = tmp_path / "run"
    _train(tiny_vlm, pairs_manifest, out, val_fraction=0.25, max_steps=4, eval_steps=2, save_steps=2,
           batch_size=2, samples_per_eval=1, max_new_tokens=8)
    samples = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [2, 4]
    held = samples[0]["image"]
    assert all(s["image"] == held for s in samples) and samples[0]["reference"] in [t for _, t in PAIRS]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert any("eval_loss" in e for e in state["log_history"])
    # Train longer in the same folder: it resumes from checkpoint-4 instead of starting over.
    _train(tiny_vlm, pairs_manifest, out, val_fraction=0.25, max_steps=6, eval_steps=2, save_steps=2,
           batch_size=2, samples_per_eval=1, max_new_tokens=8)
    steps = [s["step"] for s in (json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines())]
    assert steps == [2, 4, 6]


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_training_script_help_and_adapter_check(request, family, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from describe.adapters import check_adapter
    from describe.modeling import LoraSettings, add_lora, load_base

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(repo / "training" / "train_describer.py"), "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--quantize_4bit" in out.stdout and "Qwen/Qwen2.5-VL-3B-Instruct" in out.stdout
    tiny_vlm = request.getfixturevalue(family)
    model, _ = load_base(str(tiny_vlm), dtype="fp32")
    peft_model = add_lora(model, LoraSettings(r=4, alpha=8))
    peft_model.save_pretrained(tmp_path / "untrained")  # B = 0: no effect on outputs
    assert check_adapter(str(tiny_vlm), tmp_path / "untrained")["changes_output"] is False
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "changed")
    report = check_adapter(str(tiny_vlm), tmp_path / "changed")
    assert report["changes_output"] and report["problems"] == []


VISION_MODULES = {"tiny_vlm": {"qkv", "proj", "fc1", "fc2"},
                  "tiny_qwen25vl": {"qkv", "proj", "gate_proj", "up_proj", "down_proj"}}


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_lora_vision_covers_every_vision_projection(request, family, tmp_path):
    """`--lora_vision` reaches attention and MLP of every vision block, the gated MLP of Qwen2.5-VL too,
    and the saved adapter changes what the model sees."""
    from describe.adapters import check_adapter, inspect_adapter
    from describe.modeling import LoraSettings, add_lora, load_base

    tiny_vlm = request.getfixturevalue(family)
    model, _ = load_base(str(tiny_vlm), dtype="fp32")
    depth = len(model.model.visual.blocks)
    peft_model = add_lora(model, LoraSettings(r=4, alpha=8, vision=True))
    wrapped = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and ".visual." in n]
    per_block = Counter(n.split(".visual.blocks.")[1].split(".")[0] for n in wrapped if ".blocks." in n)
    assert per_block == {str(b): len(VISION_MODULES[family]) for b in range(depth)}
    assert {n.rsplit(".", 1)[-1] for n in wrapped} == VISION_MODULES[family]
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n and ".visual." in n:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "vision")
    info = inspect_adapter(tmp_path / "vision")
    assert info["vision_tensors"] == 2 * len(wrapped) and info["problems"] == []
    assert check_adapter(str(tiny_vlm), tmp_path / "vision")["changes_output"]


def test_describe_cli_writes_descriptions_core_can_read(tiny_vlm, tmp_path, capsys):
    from realness.cli import main
    from realness.data import load_descriptions

    images = tmp_path / "imgs"
    images.mkdir()
    for i, (colour, _) in enumerate(PAIRS[:3]):
        _image(colour).save(images / f"p{i}.png")
    (images / "broken.png").write_bytes(b"nope")
    assert main(["describe", "--model", str(tiny_vlm), "--images", str(images), "--out", str(tmp_path / "d.csv"),
                 "--max-new-tokens", "6", "--batch-size", "2"]) == 1  # 1: some image failed
    assert f"described 3 image(s) with {tiny_vlm}, 1 failed" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "d.csv").open()))
    assert [r["filename"] for r in rows] == ["p0.png", "p1.png", "p2.png"]
    assert all(r["contract_ok"] == "False" for r in rows)  # a random model does not follow the contract
    assert set(load_descriptions(tmp_path / "d.csv")) == {"p0.png", "p1.png", "p2.png"}


def test_second_family_idefics3_trains_through_the_same_code(tiny_idefics3, pairs_manifest, tmp_path):
    """SmolVLM's architecture (Idefics3): same collator, LoRA targets, Trainer, adapter and Describer."""
    from describe.adapters import inspect_adapter
    from describe.engines.transformers import Describer

    adapter = _train(tiny_idefics3, pairs_manifest, tmp_path / "idefics", max_steps=100)
    info = inspect_adapter(adapter)
    assert info["problems"] == [] and info["vision_tensors"] == 0 and "text_model" in info["example_key"]
    tuned = Describer(str(tiny_idefics3), adapter, max_new_tokens=24)
    assert [t.strip() for t in tuned.generate([_image(c) for c, _ in PAIRS])] == [t for _, t in PAIRS]


def test_annotate_direct_mode_with_the_transformers_engine(tiny_vlm, tmp_path, capsys):
    from realness.cli import main

    images = tmp_path / "imgs"
    images.mkdir()
    for i, (colour, _) in enumerate(PAIRS[:3]):
        _image(colour).save(images / f"p{i}.png")
    (images / "broken.png").write_bytes(b"nope")
    out = tmp_path / "d.jsonl"
    args = ["annotate", "--engine", "transformers", "--model", str(tiny_vlm), "--images", str(images),
            "--out", str(out), "--max_tokens", "6", "--batch_size", "2", "--progress", "false"]
    assert main(args) == 1  # the broken file fails, the rest are described
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert sorted(r["filename"] for r in recs if r["status"] == "ok") == ["p0.png", "p1.png", "p2.png"]
    assert [r["filename"] for r in recs if r["status"] == "failed"] == ["broken.png"]
    assert all(r["engine"] == "transformers" for r in recs if r["status"] == "ok")
    assert main(args) == 1  # resumed: only the broken file is tried again
    assert "annotated 0, skipped 3 already done, failed 1" in capsys.readouterr().out
