import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from realness.cli import main
from realness.core import CoreModel, create_core
from realness.images import load_image


@pytest.fixture
def saved_core(tiny_core_kwargs, tmp_path):
    m = create_core("paper", pretrained=False, pretrained_text=True, **tiny_core_kwargs,
                    mos_mean=50.0, mos_std=15.0, mos_range=(0.0, 100.0))
    m.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(d / f"ok{i}.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.new("RGB", (10, 10)).save(d / "nodesc.png")
    with (tmp_path / "desc.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "description"])
        for i in range(5):
            w.writerow([f"ok{i}.png", f"Yes, the {['hand', 'dog', 'sky', 'tree', 'car'][i]} looks distorted."])
        w.writerow(["broken.png", "No."])
    return d


def test_score_core_cli_scores_good_images_and_reports_bad_ones(saved_core, folder, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    rc = main(["score-core", "--model", str(saved_core), "--images", str(folder),
               "--descriptions", str(tmp_path / "desc.csv"), "--out", str(out), "--batch-size", "2", "--no-progress"])
    assert rc == 1  # some images failed: exit 1 (README "Exit codes")
    rows = list(csv.DictReader(out.open()))
    assert [r["filename"] for r in rows] == ["broken.png", "nodesc.png"] + [f"ok{i}.png" for i in range(5)]
    by = {r["filename"]: r for r in rows}
    assert "broken.png" in by["broken.png"]["error"] and by["broken.png"]["score_z"] == ""
    assert "no description" in by["nodesc.png"]["error"]
    # Scores equal calling the model directly, and the MOS column is the z-score mapped back.
    model = CoreModel.from_pretrained(saved_core)
    names = [f"ok{i}.png" for i in range(5)]
    texts = [by[n]["description"] for n in names]
    direct = model.predict([load_image(folder / n) for n in names], texts)
    assert [float(by[n]["score_z"]) for n in names] == pytest.approx(direct.tolist(), abs=1e-5)
    assert [float(by[n]["score_mos"]) for n in names] == pytest.approx((direct * 15 + 50).tolist(), abs=1e-3)
    assert "scored 5 image(s), 2 failed" in capsys.readouterr().out


def test_eval_cli_matches_metrics_and_writes_plot(tmp_path, capsys):
    rng = np.random.default_rng(0)
    mos = rng.uniform(10, 90, 30)
    with (tmp_path / "scores.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "score_z", "score_mos", "description", "error"])
        for i, m in enumerate(mos):
            w.writerow([f"f{i}.png", "", f"{m + rng.normal(0, 10):.4f}", "x", ""])
        w.writerow(["extra.png", "", "", "x", "corrupt"])
    with (tmp_path / "ratings.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "MOS_Rating", "MOS_ZScore"])
        for i, m in enumerate(mos):
            w.writerow([f"f{i}.png", m, 0])
    assert main(["eval", "--scores", str(tmp_path / "scores.csv"), "--truth", str(tmp_path / "ratings.csv"),
                 "--out", str(tmp_path / "ev"), "--n-boot", "200"]) == 1  # extra.png had no score: listed, exit 1
    result = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    pred = [float(r["score_mos"]) for r in csv.DictReader((tmp_path / "scores.csv").open()) if r["score_mos"]]
    from scipy.stats import spearmanr

    assert result["srocc"] == pytest.approx(spearmanr(pred, mos).statistic)
    assert result["n"] == 30 and result["unmatched"] == ["extra.png"]
    assert result["srocc_ci95"][0] <= result["srocc"] <= result["srocc_ci95"][1]
    assert (tmp_path / "ev" / "scatter.png").stat().st_size > 5000


def test_help_lists_every_flag_with_its_default():
    out = subprocess.run([sys.executable, "-m", "realness.cli", "train-core", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--data", "--lr", "--epochs", "--seeds", "--model.mode", "--model.freeze_image", "--resume", "--config"):
        assert flag in out.stdout
    assert "(default: 0.00011)" in out.stdout and "(default: 16)" in out.stdout
    top = subprocess.run([sys.executable, "-m", "realness.cli"], capture_output=True, text=True)
    assert "train-core" in top.stdout and "score-core" in top.stdout


def test_yaml_config_sets_defaults_and_flags_override(tmp_path):
    from realness.argparsing import parse_dataclasses
    from realness.core.training import CoreTrainConfig

    (tmp_path / "c.yaml").write_text("data: some/dir\nepochs: 3\nseeds: [1, 2]\nimage_size: [64, 96]\nfreeze_text: true\n")
    (cfg,) = parse_dataclasses([CoreTrainConfig], ["--config", str(tmp_path / "c.yaml"), "--epochs", "5"])
    assert (cfg.data, cfg.epochs, cfg.seeds, tuple(cfg.model.image_size), cfg.model.freeze_text) == ("some/dir", 5, [1, 2], (64, 96), True)
    assert cfg.lr == pytest.approx(1.1e-4) and cfg.batch_size == 16
    (tmp_path / "bad.yaml").write_text("data: x\nepoch: 3\n")
    with pytest.raises(SystemExit):
        parse_dataclasses([CoreTrainConfig], ["--config", str(tmp_path / "bad.yaml")])


def test_library_warnings_stay_off_the_console_and_verbose_brings_them_back():
    """What bitsandbytes sets off at import on an AVX512-BF16 CPU offline (the `kernels` package warning that it
    skips a hub trust check) is a library's chatter about a fallback: the console shows only the run's own lines."""
    code = ("import logging, sys; from realness.cli import _quiet_libraries; _quiet_libraries(sys.argv[1] == 'v'); "
            "logging.getLogger('kernels._internals.hf_hub').warning('Skipping publisher trust check'); "
            "logging.getLogger('bitsandbytes.backends').warning('Failed to load CPU gemm_4bit_forward'); "
            "logging.getLogger('realness.pipeline').warning('own line')")
    quiet = subprocess.run([sys.executable, "-c", code, "q"], capture_output=True, text=True, check=True).stderr
    assert quiet.splitlines() == ["WARNING own line"]
    loud = subprocess.run([sys.executable, "-c", code, "v"], capture_output=True, text=True, check=True).stderr
    assert "Skipping publisher trust check" in loud and "gemm_4bit_forward" in loud and "own line" in loud
