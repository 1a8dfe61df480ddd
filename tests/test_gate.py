"""The distillation gate: hand-computed statistics, baselines that can fail a candidate, exit codes."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from realness.answers import verdict_accuracy, verdict_report
from realness.gate import (
    core_agreement,
    cost_per_1000,
    derangement,
    embedding_similarity,
    paired_bootstrap,
    rouge_l,
    text_value_retained,
)

SAMPLES = Path(__file__).resolve().parents[1] / "realness" / "samples"


def test_rouge_l_by_hand_with_stemming():
    # LCS("the hat looks odd", "the odd hat") = "the hat" or "the odd": 2 words; P = 2/3, R = 2/4.
    assert rouge_l("The hat looks odd.", "the odd hat") == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert rouge_l("Yes, the face.", "yes the face") == 1.0
    assert rouge_l("the hands look odd", "the hand looks odd") == 1.0  # stemmed, as the field reports ROUGE
    assert rouge_l("abc", "") == 0.0 and rouge_l("one two", "three four") == 0.0


def test_verdict_accuracy_by_hand():
    refs = ["Yes, odd.", "No.", "Somewhat. Hands.", "Yes, the sky."]
    cands = ["yes: odd", "Somewhat, shadows", "somewhat - hands", "The sky is odd."]  # last has no verdict
    assert verdict_accuracy(refs, cands) == pytest.approx(2 / 4)


def test_verdict_report_kappa_confusion_and_baselines_by_hand():
    refs = ["Yes, a.", "Yes, b.", "No.", "Somewhat. c", "Yes, d.", "No."]
    cands = ["Yes, a.", "Somewhat. b", "No.", "Somewhat. c", "No.", "d without verdict"]
    r = verdict_report(refs, cands)
    assert r["agreement"] == pytest.approx(3 / 6) and r["no_verdict_share"] == pytest.approx(1 / 6)
    assert r["majority_class"] == "yes" and r["majority_baseline"] == pytest.approx(3 / 6)
    # the five pairs with both verdicts, codes no=0 somewhat=1 yes=2: (2,2) (2,1) (0,0) (1,1) (2,0)
    assert r["confusion"]["matrix"] == [[1, 0, 0], [0, 1, 0], [1, 1, 1]]
    # quadratic weights w = (i-j)^2/4; observed sum w = (0 + 1 + 0 + 0 + 4)/4 = 1.25;
    # expected from marginals: ref (1,1,3), cand (2,2,1) over n = 5: sum_ij r_i c_j w_ij / 5 = 12/4/5 * ... by hand:
    ref_m, cand_m = np.array([1, 1, 3]), np.array([2, 2, 1])
    w = np.array([[(i - j) ** 2 / 4 for j in range(3)] for i in range(3)])
    expected = (np.outer(ref_m, cand_m) * w).sum() / 5
    assert r["kappa_quadratic"] == pytest.approx(1 - 1.25 / expected)
    same = verdict_report(refs, refs)
    assert same["kappa_quadratic"] == pytest.approx(1.0) and same["agreement"] == 1.0


def test_text_value_retained_and_derangement():
    assert text_value_retained(0.5, 0.6, 0.4) == pytest.approx(0.5)   # half of the reference's gain kept
    assert text_value_retained(0.3, 0.6, 0.4) == pytest.approx(-0.5)  # worse than the floor: harm
    assert math.isnan(text_value_retained(0.5, 0.4, 0.4))             # the reference itself gains nothing
    for seed in range(5):
        d = derangement(7, seed)
        assert sorted(d) == list(range(7)) and not (d == np.arange(7)).any()
    assert (derangement(7, 3) == derangement(7, 3)).all()


def test_paired_bootstrap_is_deterministic_and_pairs_the_rows():
    rng = np.random.default_rng(0)
    mos = rng.normal(size=40)
    rows = {"reference": mos + rng.normal(scale=0.5, size=40), "candidate": mos + rng.normal(scale=1.0, size=40),
            "constant": rng.normal(size=40)}
    a = paired_bootstrap(mos, rows, "candidate", "reference", n_boot=200, seed=1)
    assert a == paired_bootstrap(mos, rows, "candidate", "reference", n_boot=200, seed=1)
    same = paired_bootstrap(mos, {"reference": rows["reference"], "candidate": rows["reference"]},
                            "candidate", "reference", n_boot=50)
    assert same["ratio"]["ci95"] == [1.0, 1.0] and same["minus_reference"]["ci95"] == [0.0, 0.0]  # paired: no noise
    assert a["minus_constant"]["mean"] > 0 and a["ratio"]["ci95"][0] < a["ratio"]["mean"] < a["ratio"]["ci95"][1]


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


def _write(path: Path, rows: dict[str, str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "description"])
        w.writerows(rows.items())
    return path


@pytest.fixture(scope="module")
def gate_data(tmp_path_factory):
    """The six samples, their hand-written descriptions as the reference, and MOS planted so that CORE with
    the reference descriptions ranks them perfectly (its SROCC is 1): a candidate equal to the reference
    must pass, a constant one must fail."""
    from realness.core import CoreModel
    from realness.data import load_descriptions
    from realness.images import list_images
    from realness.scoring import score_images

    tmp = tmp_path_factory.mktemp("gate")
    ref = load_descriptions(SAMPLES / "descriptions.csv")
    paths = list_images(SAMPLES / "images")
    z = {r.filename: r.score_z for r in score_images(CoreModel.from_pretrained("offline"), paths, ref, progress=False)}
    with (tmp / "truth.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mos"])
        w.writerows([(n, 50 + 10 * v) for n, v in z.items()])
    return tmp, ref


def _gate(tmp: Path, candidate: Path, tiny_bert, *extra) -> list[str]:
    return ["eval-describer", "--images", str(SAMPLES / "images"), "--truth", str(tmp / "truth.csv"),
            "--reference", str(SAMPLES / "descriptions.csv"), "--candidate", str(candidate),
            "--encoder", str(tiny_bert), "--n_boot", "100", *extra]


def test_a_candidate_equal_to_the_reference_passes(gate_data, tiny_bert, tmp_path, capsys):
    from realness.cli import main

    tmp, ref = gate_data
    cand = _write(tmp_path / "cand.csv", ref)
    assert main(_gate(tmp, cand, tiny_bert, "--images-per-s", "2", "--gpu-hour-price", "3.6",
                      "--out", str(tmp_path / "out"), "--regions")) == 0
    report = json.loads((tmp_path / "out" / "gate.json").read_text())
    s = report["scores"]
    assert report["passed"] and report["reasons"] == [] and report["n"] == 6
    assert s["candidate"]["srocc"] == pytest.approx(1.0) == s["reference"]["srocc"]
    assert set(report["floors"]) == {"constant", "shuffled", "image_only"}
    assert all(s[k]["srocc"] < 1.0 for k in report["floors"])
    assert report["verdicts"]["kappa_quadratic"] == pytest.approx(1.0)
    assert report["text_value_retained"] == pytest.approx(1.0)
    assert report["bootstrap"]["ratio"]["ci95"] == [1.0, 1.0]
    assert report["cost"]["describer_per_1000"] == pytest.approx(0.5)
    assert report["mentions"]["macro_f1"] == 1.0 and report["mentions"]["categories"]["faces"]["both"] > 0
    assert report["hallucination"]["hallucinated"] == 0.0 == report["hallucination"]["missed"]
    out = capsys.readouterr().out
    assert "PASSED" in out and "macro-F1 1.000" in out


def test_a_constant_candidate_fails_naming_the_constant_baseline(gate_data, tiny_bert, tmp_path, capsys):
    from realness.cli import main
    from realness.gate import CONSTANT

    tmp, ref = gate_data
    cand = _write(tmp_path / "cand.csv", {n: CONSTANT for n in ref})
    assert main(_gate(tmp, cand, tiny_bert, "--out", str(tmp_path / "out"))) == 1
    report = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert not report["passed"] and any("constant baseline" in r for r in report["reasons"])
    assert report["text_value_retained"] <= 0.0
    assert "FAILED" in capsys.readouterr().out
    assert main(_gate(tmp, cand, tiny_bert, "--no_fail", "true")) == 0  # numbers only


def test_save_to_puts_gate_json_where_core_auto_reads_it(gate_data, tiny_bert, tmp_path):
    """eval-describer --save_to ADAPTER writes the gate.json that `run --core auto` reads for that adapter."""
    from describe.engines import describer_gate
    from realness.cli import main
    from realness.gate import CONSTANT
    from realness.pipeline import RunConfig, choose_core

    tmp, ref = gate_data
    cand = _write(tmp_path / "cand.csv", {n: CONSTANT for n in ref})
    adapter = tmp_path / "adapter"
    assert main(_gate(tmp, cand, tiny_bert, "--save_to", str(adapter), "--no_fail", "true")) == 0
    gate = describer_gate("some/base", str(adapter))
    assert gate["passed"] is False and "constant baseline" in gate["summary"] and gate["n"] == 6
    cfg = RunConfig(images=str(SAMPLES / "images"), describer="some/base", adapter=str(adapter))
    assert choose_core(cfg, [SAMPLES / "images" / n for n in ref], {})[0] == "offline-image"


def test_malformed_candidate_file_exits_2_with_one_line(gate_data, tiny_bert, tmp_path, capsys):
    from realness.cli import main

    tmp, _ = gate_data
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,text\nportrait.jpg,Yes.\n")
    assert main(_gate(tmp, bad, tiny_bert)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv" in err[0]


def test_retrieval_baseline_refuses_overlapping_images(gate_data, tiny_bert, capsys):
    from realness.cli import main

    tmp, _ = gate_data
    args = _gate(tmp, SAMPLES / "descriptions.csv", tiny_bert, "--train_images", str(SAMPLES / "images"),
                 "--train_descriptions", str(SAMPLES / "descriptions.csv"))
    assert main(args) == 2
    assert "must not see the images it is scored on" in capsys.readouterr().err


def test_a_folder_named_offline_does_not_hide_the_bundled_model(tmp_path, monkeypatch):
    from realness.core import CoreModel

    (tmp_path / "offline").mkdir()
    monkeypatch.chdir(tmp_path)
    assert CoreModel.from_pretrained("offline").config.mode == "fusion"
    with pytest.raises(FileNotFoundError, match="no config.json"):
        CoreModel.from_pretrained(str(tmp_path / "offline" / ".."))


def test_fit_logistic_reports_the_linear_fallback(caplog):
    from realness.metrics import LINEAR_FALLBACK, correlations, fit_logistic

    _, fit = fit_logistic([1.0] * 10, list(range(10)), return_fit=True)
    assert fit == LINEAR_FALLBACK
    with caplog.at_level("WARNING"):
        assert correlations([1.0] * 10, list(range(10)))["fit"] == LINEAR_FALLBACK
    assert "did not converge" in caplog.text
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    assert correlations(x, 3 * x + rng.normal(scale=0.1, size=50))["fit"] == "logistic5"
