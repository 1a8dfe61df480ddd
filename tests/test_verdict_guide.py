"""The verdict guide (`describe.verdict`): image-only CORE's score cut into Yes / Somewhat / No, written as the
start of the describer's answer, which the model continues; the bundled describer ships one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "realness" / "samples" / "images"


def test_thresholds_give_each_verdict_the_reference_share_and_verdicts_rise_with_the_score():
    from describe.verdict import ORDER, VerdictGuide, fit_thresholds

    rng = np.random.default_rng(0)
    pred = rng.normal(size=300)
    reference = ["yes"] * 90 + ["somewhat"] * 120 + ["no"] * 90 + [""] * 7  # unparsed verdicts are left out
    pred = np.concatenate([pred, rng.normal(size=7)])
    guide = VerdictGuide("offline-image", fit_thresholds(pred, reference))
    said = [guide.verdict(z) for z in pred[:300]]
    assert abs(said.count("yes") - 90) <= 1 and abs(said.count("no") - 90) <= 1
    ranks = [ORDER.index(guide.verdict(z)) for z in np.sort(pred)]
    assert ranks == sorted(ranks) and ranks[0] == 0 and ranks[-1] == 2  # yes for the lowest scores, no for the highest
    low, high = guide.thresholds
    assert guide.verdict(low - 1e-9) == "yes" and guide.verdict(low) == "somewhat" and guide.verdict(high) == "no"
    with pytest.raises(ValueError, match="ascending"):
        VerdictGuide("offline-image", (0.5, -0.5))
    with pytest.raises(ValueError, match="at least 3"):
        fit_thresholds([0.1, 0.2], ["yes", "no"])


def test_a_given_verdict_is_tokenised_as_training_tokenised_the_answer():
    """The prefix continues the generation prompt exactly where training's answer labels start; a stray
    space or newline would put the model in a state it never saw."""
    from transformers import AutoProcessor

    from describe.chat import generation_inputs, render
    from describe.small import BUNDLED, register

    register()
    processor = AutoProcessor.from_pretrained(str(BUNDLED))
    tok = processor.tokenizer
    for word, rest in (("Yes", ", the hat looks oddly large for the dog's head."), ("Somewhat", ". The sky is flat."),
                       ("No", ", there is nothing unrealistic in this image.")):
        trained = tok(render(processor, answer=word + rest))["input_ids"]
        given = tok(render(processor) + word)["input_ids"]
        assert trained[:len(given)] == given, word
        spaced = tok(render(processor) + " " + word)["input_ids"]
        assert trained[:len(spaced)] != spaced  # what the check catches
    batch = generation_inputs(processor, [_image(), _image()], prefixes=["Yes", "Somewhat"])
    texts = processor.batch_decode(batch["input_ids"], skip_special_tokens=False)
    assert texts[0].endswith("assistant\nYes") and texts[1].endswith("assistant\nSomewhat")
    with pytest.raises(ValueError, match="2 images"):
        generation_inputs(processor, [_image(), _image()], prefixes=["Yes"])


def _image():
    from PIL import Image

    return Image.new("RGB", (64, 48), (120, 140, 160))


def test_the_bundled_describer_ships_a_guide_on_image_only_core():
    from describe.small import BUNDLED
    from describe.verdict import VERDICT_FILE, resolve_guide

    data = json.loads((BUNDLED / VERDICT_FILE).read_text())
    guide = resolve_guide("auto", BUNDLED / "adapter", BUNDLED)
    assert guide is not None and guide.core == data["core"] == "offline-image"
    assert guide.thresholds[0] < 0 < guide.thresholds[1]  # 28 % Yes below, 29 % No above: around the mean
    assert not guide.model().config.uses_text
    assert resolve_guide("none", BUNDLED) is None
    with pytest.raises(ValueError, match="not a verdict guide"):
        resolve_guide(str(SAMPLES))


def test_the_guide_sets_each_verdict_and_the_describer_explains_it(tmp_path):
    from describe.engines import load_describer
    from describe.small import SMALL_DESCRIBER
    from describe.verdict import VerdictGuide
    from realness.images import load_image

    names = ("landscape_flat.jpg", "portrait_plastic_skin.jpg", "portrait_warped_face.jpg")
    images = [load_image(SAMPLES / n) for n in names]
    probe = VerdictGuide("offline-image", (0.0, 0.0))
    scores = probe.scores(images)
    s = np.sort(scores)
    assert s[0] < s[1] < s[2]
    # Cut between the three images' scores, so each gets another verdict: lowest Yes, middle Somewhat, top No.
    guide = VerdictGuide("offline-image", ((s[0] + s[1]) / 2, (s[1] + s[2]) / 2), fitted_on="test")
    guide.save(tmp_path)
    engine, info = load_describer("transformers", SMALL_DESCRIBER, verdict_guide=str(tmp_path), max_new_tokens=24,
                                  device="cpu")
    assert info["verdict_guide"]["thresholds"] == list(guide.thresholds)
    answers = engine.describe(images)
    expected = [guide.verdict(z) for z in scores]
    assert sorted(expected) == ["no", "somewhat", "yes"]
    for answer, verdict in zip(answers, expected):
        assert answer.verdict == verdict, answer.text
        assert len(answer.explanation.split()) >= 3, answer.text  # the model wrote on after the given word


def test_the_report_says_who_set_the_verdicts(tmp_path):
    from realness.report import write_report

    record = {"filename": "a.jpg", "score_z": -0.9, "verdict": "yes", "description": "Yes, the hand has six fingers.",
              "status": "ok"}
    guide = {"core": "offline-image", "thresholds": [-0.21, 0.42], "fitted_on": "test"}
    with_guide = write_report([record], {"ok": 1, "models": {"describer": {"name": "d", "verdict_guide": guide}}},
                              tmp_path / "a.html").read_text()
    assert "Verdicts from image-only CORE" in with_guide and "-0.21" in with_guide and "0.42" in with_guide
    plain = write_report([record], {"ok": 1, "models": {"describer": {"name": "d"}}}, tmp_path / "b.html").read_text()
    assert "Verdicts from image-only CORE" not in plain
