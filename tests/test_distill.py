import math

import pytest

from realness.distill import core_agreement, cost_per_1000, embedding_similarity, rouge_l, verdict_accuracy


def test_rouge_l_by_hand():
    # LCS("the hat looks odd", "the odd hat") = "the hat" or "the odd": 2 words; P = 2/3, R = 2/4.
    assert rouge_l("The hat looks odd.", "the odd hat") == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert rouge_l("Yes, the face.", "yes the face") == 1.0
    assert rouge_l("abc", "") == 0.0 and rouge_l("one two", "three four") == 0.0


def test_verdict_accuracy_by_hand():
    refs = ["Yes, odd.", "No.", "Somewhat. Hands.", "Yes, the sky."]
    cands = ["yes: odd", "Somewhat, shadows", "somewhat - hands", "The sky is odd."]  # last has no verdict
    assert verdict_accuracy(refs, cands) == pytest.approx(2 / 4)


def test_core_agreement_ratios():
    mos = [10, 20, 30, 40, 50]
    same = core_agreement([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], mos)
    assert same["ratio"] == {"srocc": 1.0, "plcc": 1.0}
    worse = core_agreement([1, 2, 3, 4, 5], [1, 3, 2, 4, 5], mos)
    assert worse["describer"]["srocc"] == pytest.approx(0.9) and worse["ratio"]["srocc"] == pytest.approx(0.9)


def test_cost_arithmetic():
    # 2 images/s -> 500 s per 1,000 images; at $3.60/hour that is $0.50.
    assert cost_per_1000(2.0, 3.6) == pytest.approx(0.5)


def test_embedding_similarity_with_a_local_encoder(tiny_bert):
    assert embedding_similarity(["the dog looks odd"], ["the dog looks odd"], str(tiny_bert)) == pytest.approx(1.0)
    different = embedding_similarity(["the dog looks odd"], ["red blue green sky"], str(tiny_bert))
    assert different < 0.999 and not math.isnan(different)


def test_eval_describer_cli_end_to_end(tiny_core_kwargs, tiny_bert, tmp_path, capsys):
    import csv
    import json

    import numpy as np
    from PIL import Image

    from realness.cli import main
    from realness.core import create_core

    model = create_core("paper", pretrained=False, pretrained_text=True, **tiny_core_kwargs)
    model.save_pretrained(tmp_path / "core")
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    refs = ["Yes, the hand looks distorted.", "No, it looks natural.", "Somewhat. The sky is odd.", "Yes, warped edges."]
    cands = ["Yes, the hand looks distorted.", "Somewhat. The fur looks odd.", "Somewhat. The sky is odd.", "No."]
    for name, rows in (("ref.csv", refs), ("cand.csv", cands)):
        with (tmp_path / name).open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["filename", "description"])
            w.writerows([[f"i{i}.png", t] for i, t in enumerate(rows)])
    with (tmp_path / "ratings.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "MOS_Rating", "MOS_ZScore"])
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"i{i}.png")
            w.writerow([f"i{i}.png", 20 + 15 * i, 0])
    assert main(["eval-describer", "--images", str(tmp_path / "imgs"), "--truth", str(tmp_path / "ratings.csv"),
                 "--reference", str(tmp_path / "ref.csv"), "--candidate", str(tmp_path / "cand.csv"),
                 "--core", str(tmp_path / "core"), "--encoder", str(tiny_bert), "--images-per-s", "2",
                 "--gpu-hour-price", "3.6", "--out", str(tmp_path / "gate")]) == 0
    report = json.loads((tmp_path / "gate" / "distill.json").read_text())
    assert report["n"] == 4
    assert report["text"]["verdict_accuracy"] == pytest.approx(2 / 4)  # i0, i2 agree
    assert report["text"]["rouge_l"] == pytest.approx(np.mean([rouge_l(r, c) for r, c in zip(refs, cands)]))
    assert report["cost"]["describer_per_1000"] == pytest.approx(0.5)
    core = report["core"]
    assert core["ratio"]["srocc"] == pytest.approx(core["describer"]["srocc"] / core["reference"]["srocc"])
