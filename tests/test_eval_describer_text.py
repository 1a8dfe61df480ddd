"""`eval/cv_core_describer_text.py`: the cross-fit split and the rescoring of trained heads with other text."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import held_out_predictions, planted_manifest

from realness.core import CoreModel
from realness.core.training import CoreTrainConfig, load_training_data, train_core
from realness.images import load_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from cv_core_describer_text import part_of, rescore  # noqa: E402


def test_parts_cover_every_image_once_balanced_and_seeded():
    names = [f"img{i:03d}.png" for i in range(11)]
    part = part_of(names, 2, seed=0)
    assert sorted(part) == names and set(part.values()) == {0, 1}
    assert sorted(np.bincount(list(part.values()))) == [5, 6]
    assert part == part_of(list(reversed(names)), 2, seed=0)  # the order names come in does not matter
    assert part != part_of(names, 2, seed=1)


def test_rescoring_with_the_runs_own_text_reproduces_its_predictions(tiny_core_kwargs, tmp_path):
    """Read with their own descriptions the heads score what training wrote; with other texts they
    score what the saved model scores from the files and those texts."""
    data, _, _ = planted_manifest(tmp_path / "data", 80)
    cfg = CoreTrainConfig.from_flat(data=str(data), output_dir=str(tmp_path / "run"), image_backbone=tiny_core_kwargs["image_backbone"],
                          text_encoder=tiny_core_kwargs["text_encoder"], pretrained=False, pretrained_text=True,
                          image_size=(48, 48), head_hidden=16, folds=2, seeds=[42], epochs=3, batch_size=8, lr=5e-3,
                          num_workers=0, augment=False, progress=False, freeze_image=True, freeze_text=True)
    train_core(cfg)
    records, _ = load_training_data(cfg, needs_text=True)
    own = {Path(r["image"]).name: r["description"] for r in records}
    cache = tmp_path / "run" / "feature_cache"
    rescore(tmp_path / "run", tmp_path / "same", records, own, cache)
    for fold in (0, 1):
        assert held_out_predictions(tmp_path / "same", fold=fold) == pytest.approx(
            held_out_predictions(tmp_path / "run", fold=fold), abs=1e-5)
    # Tiny random text features barely differ between texts: the text columns of the head are scaled up
    # so that reading another text must move the scores.
    best_dir = tmp_path / "run" / "seed42" / "fold0" / "best"
    best = CoreModel.from_pretrained(best_dir)
    first = best.head.members[0][1]
    with torch.no_grad():
        first.weight[:, first.in_features - best.text_encoder.dim:] *= 1000
    best.save_pretrained(best_dir)
    flipped = {n: f"{i} " + " ".join(reversed(t.split())) * (1 + i % 4) for i, (n, t) in enumerate(own.items())}
    rescore(tmp_path / "run", tmp_path / "flipped", records, flipped, cache)
    rows = list(csv.DictReader((tmp_path / "flipped" / "seed42" / "fold0" / "predictions.csv").open()))
    assert [r["filename"] for r in rows] == [r["filename"] for r in
                                             csv.DictReader((tmp_path / "run" / "seed42" / "fold0" / "predictions.csv").open())]
    image = {Path(r["image"]).name: r["image"] for r in records}
    direct = best.predict([load_image(image[r["filename"]]) for r in rows], [flipped[r["filename"]] for r in rows]).numpy()
    assert [float(r["pred_z"]) for r in rows] == pytest.approx(direct, abs=1e-4)
    own_text = best.predict([load_image(image[r["filename"]]) for r in rows], [own[r["filename"]] for r in rows]).numpy()
    assert np.median(np.abs(direct - own_text)) > 10 * 1e-4  # the swap moves scores well beyond the parity tolerance
    assert (tmp_path / "flipped" / "seed42" / "fold1" / "result.json").is_file()
