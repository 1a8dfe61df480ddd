"""Stage 1's aspect tagger (realness.dream.aspects) and the aspects line of the grounded describer's prompt (#26):
the grounding rule, fitting and reloading, the prompt, training targets, the stage-1 cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import colour_image

from describe.chat import TrainCollator, prompt_parts
from describe.grounding import find_regions, target_aspects
from describe.prompt import DEFAULT_QUESTION, RegionPrompt, aspects_line
from realness.dream.aspects import (
    KINDS,
    NEEDS,
    AspectConfig,
    AspectTagger,
    best_thresholds,
    cross_validate,
    detector_flags,
    fit_aspect_tagger,
    grounded,
    repeated_cv_thresholds,
)
from realness.dream.regions import Region, Regions
from realness.mentions import CATEGORIES

ON = RegionPrompt(enabled=True, crop_size=56, aspects=True)


def _face() -> Region:
    return Region("face", (10, 10, 40, 40), 0.99, "mtcnn", suspicion=0.4)


def test_a_detector_confirmed_aspect_needs_its_detector():
    flagged = np.ones((2, len(CATEGORIES)), bool)
    flags = detector_flags([[_face()], []])
    assert flags.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]] and KINDS == ("face", "hand", "person", "text")
    kept = grounded(flagged, flags)
    on = lambda row: {c for c, v in zip(CATEGORIES, kept[row]) if v}  # noqa: E731
    undetectable = {"animals", "lighting", "reflections", "skin", "background", "geometry", "objects"}
    assert on(0) == undetectable | {"faces", "eyes"}  # a face was found: faces and eyes may be discussed
    assert on(1) == undetectable  # nothing found: no face, eyes, hands, body or text, however likely


def test_thresholds_are_the_best_f1_cut_of_the_out_of_fold_probabilities():
    labels = np.array([[1], [1], [0], [1], [0], [0]], bool)
    oof = np.array([[0.9], [0.6], [0.55], [0.4], [0.2], [0.1]])
    thresholds, f1 = best_thresholds(oof, labels)
    assert thresholds[0] == pytest.approx(0.4) and f1[0] == pytest.approx(2 * 3 / (2 * 3 + 1))
    never, _ = best_thresholds(oof, np.zeros_like(labels))
    assert never[0] > 1  # a category never discussed is never flagged


def test_repeated_cross_validation_pools_its_shuffles_for_the_thresholds():
    rng = np.random.default_rng(1)
    n = 60
    labels = np.zeros((n, len(CATEGORIES)), bool)
    labels[:, CATEGORIES.index("skin")] = rng.random(n) < 0.4
    x = rng.normal(size=(n, 8)) + 1.5 * labels[:, [CATEGORIES.index("skin")]]
    flags = np.zeros((n, 4), np.float32)
    one, report = repeated_cv_thresholds(x, labels, flags, 1.0, folds=3, repeats=1, seed=7)
    single, _ = best_thresholds(cross_validate(x, labels, 1.0, 3, 7), labels)
    assert np.array_equal(one, single) and len(report["macro_f1_per_shuffle"]) == 1  # one shuffle: today's rule
    pooled, report = repeated_cv_thresholds(x, labels, flags, 1.0, folds=3, repeats=3, seed=7)
    oofs = np.concatenate([cross_validate(x, labels, 1.0, 3, 7 + r) for r in range(3)])
    assert np.array_equal(pooled, best_thresholds(oofs, np.concatenate([labels] * 3))[0])
    assert len(report["macro_f1_per_shuffle"]) == 3
    assert report["macro_f1"] == pytest.approx(np.mean(report["macro_f1_per_shuffle"]))
    assert report["f1"]["skin"] > 0.6  # the planted signal is found by every shuffle


def test_a_fitted_tagger_finds_a_planted_signal_and_reloads_exactly(tmp_path):
    rng = np.random.default_rng(0)
    n, dim = 240, 1280 * 2 + 320 * 2  # EfficientNet-Lite0's two top stages, mean and std
    x = rng.normal(size=(n, dim)).astype(np.float32)
    flags = (rng.random((n, 4)) < 0.5).astype(np.float32)
    labels = np.zeros((n, len(CATEGORIES)), bool)
    labels[:, CATEGORIES.index("lighting")] = rng.random(n) < 0.3
    x[:, :100] += labels[:, [CATEGORIES.index("lighting")]]  # a hundred features carry lighting
    labels[:, CATEGORIES.index("faces")] = flags[:, 0] > 0  # faces: where a face was detected
    tagger, report = fit_aspect_tagger(x[:200], flags[:200], labels[:200], AspectConfig(), cs=(0.1, 1.0), folds=3,
                                       repeats=2)
    assert set(report["candidates"]) == {"0.1", "1.0"} and report["c"] in (0.1, 1.0) and report["repeats"] == 2
    assert report["cv_macro_f1"] == max(v["macro_f1"] for v in report["candidates"].values())
    held = tagger.flag(x[200:], flags[200:])
    for c in ("lighting", "faces"):
        j = CATEGORIES.index(c)
        tp = (held[:, j] & labels[200:, j]).sum()
        assert 2 * tp / (held[:, j].sum() + labels[200:, j].sum()) > 0.8, c
    assert not held[:, CATEGORIES.index("animals")].any()  # never a positive: never flagged
    again = AspectTagger.from_pretrained(tagger.save_pretrained(tmp_path / "tagger"))
    assert (again.flag(x[200:], flags[200:]) == held).all()
    assert (tmp_path / "tagger" / "model.safetensors").stat().st_size < 150_000


def test_the_aspects_line_closes_the_prompt_and_off_means_todays_prompt():
    image = colour_image((200, 40, 40))
    with_face = Regions([_face()], ("faces", "lighting"))
    question, images = prompt_parts(image, with_face, DEFAULT_QUESTION, ON)
    assert question.endswith("looks warped.\nAspects to discuss: faces, lighting.") and len(images) == 2
    question, images = prompt_parts(image, Regions([], ()), DEFAULT_QUESTION, ON)
    assert question == DEFAULT_QUESTION + "\nAspects to discuss: none." and images == [image]
    assert aspects_line(["skin"]) == "Aspects to discuss: skin."
    for cfg in (RegionPrompt(enabled=True, crop_size=56), RegionPrompt(enabled=False, aspects=True)):
        plain = prompt_parts(image, Regions([], ("skin",)), DEFAULT_QUESTION, cfg)
        assert plain == (DEFAULT_QUESTION, [image])  # aspects off, or regions off: today's prompt
    assert "Aspects" not in prompt_parts(image, [_face()], DEFAULT_QUESTION, ON)[0]  # no tagger ran: no line


def test_a_target_is_trained_with_the_aspects_it_discusses(small):
    assert target_aspects("Yes, the man's fingers [10, 10, 20, 20] are merged and the shadows fall wrong.") == (
        "hands", "body", "lighting")
    assert target_aspects("No, there is nothing unrealistic in this image.") == ()
    _, processor = small
    answer = "Somewhat. The lighting on the skin looks plastic."
    batch = TrainCollator(processor, regions=ON)([{"image": colour_image((30, 200, 40)), "answer": answer,
                                                   "regions": Regions([], target_aspects(answer))}])
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert "Aspects to discuss: lighting, skin." in text and "Regions found" not in text


def test_stage_one_tags_real_images_and_its_cache_reruns_lines_without_aspects(tmp_path):
    """The real stage 1 (detectors, artifact map, bundled tagger) on two sample images: each image's regions carry
    its aspects, faces only where a face was found; a cached line without aspects runs again, one with them
    is read back."""
    from realness.samples import IMAGES_DIR

    paths = [IMAGES_DIR / "portrait.jpg", IMAGES_DIR / "landscape_flat.jpg"]
    cache = tmp_path / "regions.jsonl"
    cache.write_text(json.dumps({"filename": "portrait.jpg", "size": [1, 1], "regions": []}) + "\n")
    found = find_regions(paths, cache, progress=False, aspects=True)
    portrait, landscape = found["portrait.jpg"][1], found["landscape_flat.jpg"][1]
    assert found["portrait.jpg"][0] != (1, 1)  # run again: the cached line had no aspects
    assert any(r.label == "face" for r in portrait) and portrait.aspects and landscape.aspects
    for regions in (portrait, landscape):
        found_kinds = {r.label for r in regions}
        assert set(regions.aspects) <= set(CATEGORIES)
        assert all(NEEDS[c] in found_kinds for c in regions.aspects if c in NEEDS)  # the grounding rule
    lines = cache.read_text().splitlines()
    assert len(lines) == 3 and all("aspects" in json.loads(line) for line in lines[1:])
    again = find_regions(paths, cache, progress=False, aspects=True)
    assert len(cache.read_text().splitlines()) == 3  # nothing ran again
    assert again["portrait.jpg"][1].aspects == portrait.aspects
    assert find_regions(paths, cache, progress=False)["landscape_flat.jpg"][1].aspects == landscape.aspects


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from describe.modeling import load_base
    from describe.small import build_small_describer

    return load_base(str(build_small_describer(tmp_path_factory.mktemp("small") / "base")))
