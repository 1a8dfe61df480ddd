import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import planted_manifest
from scipy.stats import spearmanr

from realness.core import CoreModel
from realness.core.training import CoreTrainConfig, train_core

REPO = Path(__file__).resolve().parents[1]


def _manifest(folder: Path, n: int, seed: int = 0):
    return planted_manifest(folder, n, seed)


def _tiny_cfg(tiny_core_kwargs, data, out, **over) -> CoreTrainConfig:
    base = dict(data=str(data), output_dir=str(out), image_backbone=tiny_core_kwargs["image_backbone"],
                text_encoder=tiny_core_kwargs["text_encoder"], pretrained=False, pretrained_text=True,
                image_size=(48, 48), head_hidden=32, folds=1, epochs=12, batch_size=8, lr=5e-4,
                num_workers=0, augment=False, progress=False)
    return CoreTrainConfig.from_flat(**{**base, **over})


def _held_out(out: Path, image_term, text_term):
    rows = list(csv.DictReader((out / "seed42" / "fold0" / "predictions.csv").open()))
    idx = [int(r["filename"][3:6]) for r in rows]
    pred = np.array([float(r["pred_z"]) for r in rows])
    total = image_term[idx] + text_term[idx]
    return (spearmanr(pred, total).statistic, spearmanr(pred, image_term[idx]).statistic,
            spearmanr(pred, text_term[idx]).statistic)


def test_core_learns_the_planted_image_and_text_signals(tiny_core_kwargs, tmp_path):
    """Score = brightness term (uniform, 1/4 of the variance) + word term (+-1, 3/4 of the variance).

    Bars: a model that uses both reaches SROCC > 0.8 on held-out rows (perfect would be 1.0; text alone
    caps near 0.87, image alone near 0.5). Image-only must track brightness (> 0.8) and not the word
    (|r| < 0.35); text-only must track the word (> 0.7, its point-biserial cap is ~0.87) and not
    brightness beyond chance (|r| < 0.45 on 32 rows). Fusion must beat both single modalities.
    """
    data, image_term, text_term = _manifest(tmp_path / "data", 160)
    results = {}
    for mode in ("fusion", "image", "text"):
        out = tmp_path / mode
        summary = train_core(_tiny_cfg(tiny_core_kwargs, data, out, mode=mode))
        results[mode] = _held_out(out, image_term, text_term)
        assert summary["runs"][0]["srocc"] == pytest.approx(results[mode][0], abs=1e-9)
    assert results["fusion"][0] > 0.8
    assert results["fusion"][0] > max(results["image"][0], results["text"][0])
    assert results["image"][1] > 0.8 and abs(results["image"][2]) < 0.35
    assert results["text"][2] > 0.7 and abs(results["text"][1]) < 0.45


def test_cross_validation_writes_reports(tiny_core_kwargs, tmp_path):
    data, _, _ = _manifest(tmp_path / "data", 40)
    out = tmp_path / "cv"
    report = train_core(_tiny_cfg(tiny_core_kwargs, data, out, folds=4, epochs=2, seeds=[42, 7]))
    assert report["n_runs"] == 8
    seen = []
    for fold in range(4):
        rows = list(csv.DictReader((out / "seed42" / f"fold{fold}" / "predictions.csv").open()))
        seen += [r["filename"] for r in rows]
    assert sorted(seen) == sorted(f"img{i:03d}.png" for i in range(40))  # out-of-fold covers every image once
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 8 * 2
    srocc = [r["srocc"] for r in report["runs"]]
    assert report["mean_std"]["srocc"]["mean"] == pytest.approx(np.mean(srocc))
    assert report["mean_std"]["srocc"]["std"] == pytest.approx(np.std(srocc, ddof=1))
    assert (out / "scatter.png").stat().st_size > 5000 and (out / "summary.csv").is_file()
    # Finished runs are not trained again.
    before = (out / "metrics.jsonl").read_text()
    train_core(_tiny_cfg(tiny_core_kwargs, data, out, folds=4, epochs=2, seeds=[42, 7]))
    assert (out / "metrics.jsonl").read_text() == before


def test_resume_after_kill_continues_and_matches_an_uninterrupted_run(tiny_core_kwargs, tmp_path):
    data, _, _ = _manifest(tmp_path / "data", 96)
    flags = ["--data", str(data), "--image_backbone", tiny_core_kwargs["image_backbone"],
             "--text_encoder", tiny_core_kwargs["text_encoder"], "--pretrained", "false", "--pretrained_text", "true",
             "--image_size", "48", "48", "--head_hidden", "32", "--folds", "1", "--epochs", "6",
             "--batch_size", "8", "--lr", "5e-4", "--num_workers", "0", "--augment", "true", "--progress", "false"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    script = [sys.executable, str(REPO / "training" / "train_core.py")]
    killed = tmp_path / "killed"
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(script + flags + ["--out", str(killed)], env=env, stdout=log, stderr=log)
    state = killed / "seed42" / "fold0" / "checkpoint" / "state.json"
    deadline = time.time() + 300
    def checkpointed_epoch() -> int:
        try:  # the checkpoint folder is swapped atomically, so it can vanish between two calls
            return json.loads(state.read_text())["epoch"]
        except (FileNotFoundError, json.JSONDecodeError):
            return -1

    while checkpointed_epoch() < 1 and time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_epochs = [json.loads(l)["epoch"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert 1 <= len(done_epochs) < 6, done_epochs  # the log may lag the checkpoint by one epoch
    assert not (killed / "seed42" / "fold0" / "result.json").exists()

    resumed = subprocess.run(script + flags + ["--out", str(killed)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    epochs = [json.loads(l)["epoch"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5, 6]  # nothing trained twice, nothing skipped

    straight = tmp_path / "straight"
    subprocess.run(script + flags + ["--out", str(straight)], env=env, check=True, capture_output=True)
    a = list(csv.DictReader((killed / "seed42" / "fold0" / "predictions.csv").open()))
    b = list(csv.DictReader((straight / "seed42" / "fold0" / "predictions.csv").open()))
    assert [float(r["pred_z"]) for r in a] == pytest.approx([float(r["pred_z"]) for r in b], abs=1e-5)
    assert CoreModel.from_pretrained(killed / "seed42" / "fold0" / "best").config.mos_std > 0


def test_frozen_backbones_train_on_cached_features_with_the_same_predictions(tiny_core_kwargs, tmp_path):
    data, image_term, text_term = _manifest(tmp_path / "data", 60)
    cfg = _tiny_cfg(tiny_core_kwargs, data, tmp_path / "cached", freeze_image=True, freeze_text=True,
                    epochs=20, lr=1e-2)
    from realness.core.training import uses_cache

    assert uses_cache(cfg, _cfg_model(cfg))
    train_core(cfg)
    caches = sorted(p.name.split("-")[0] for p in (tmp_path / "cached" / "feature_cache").glob("*.safetensors"))
    assert caches == ["image", "text"]
    # The selected model, loaded from disk and run on the images themselves, gives the cached predictions.
    best = CoreModel.from_pretrained(tmp_path / "cached" / "seed42" / "fold0" / "best")
    rows = list(csv.DictReader((tmp_path / "cached" / "seed42" / "fold0" / "predictions.csv").open()))
    from realness.data import load_manifest
    from realness.images import load_image

    ds = {r["filename"]: r for r in load_manifest(data).to_list()}
    images = [load_image(ds[r["filename"]]["image"]) for r in rows]
    direct = best.predict(images, [ds[r["filename"]]["description"] for r in rows]).numpy()
    assert direct == pytest.approx([float(r["pred_z"]) for r in rows], abs=1e-4)
    _, image_corr, _ = _held_out(tmp_path / "cached", image_term, text_term)
    assert image_corr > 0.8  # random frozen CNN features keep brightness: the head alone learns it


def _cfg_model(cfg):
    from realness.core.configuration import CoreConfig

    return CoreConfig(**cfg.model_overrides())
