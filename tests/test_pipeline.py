"""End to end (`realness run`): real tiny describer, the bundled CORE, a tiny CLIP, real files, a real browser."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realness.cli import main
from realness.dream.maps import RealnessMap
from realness.images import list_images, load_image
from realness.samples import DESCRIPTIONS_CSV, IMAGES_DIR

ROOT = Path(__file__).resolve().parents[1]
GIVEN = {"portrait.jpg", "landscape_flat.jpg"}  # these two come with descriptions; the describer writes the rest


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The six samples, a CMYK JPEG and a truncated PNG: 8 files, 7 usable."""
    d = tmp_path_factory.mktemp("run-images")
    for p in IMAGES_DIR.iterdir():
        shutil.copy(p, d / p.name)
    Image.open(IMAGES_DIR / "portrait.jpg").convert("CMYK").save(d / "cmyk_portrait.jpg")
    buf = (IMAGES_DIR / "landscape_flat.jpg").read_bytes()
    Image.open(IMAGES_DIR / "landscape_flat.jpg").save(d / "zz_truncated.png")
    (d / "zz_truncated.png").write_bytes((d / "zz_truncated.png").read_bytes()[:400])
    assert len(buf) > 400 and len(list_images(d)) == 8
    return d


@pytest.fixture(scope="module")
def given_csv(tmp_path_factory) -> Path:
    rows = [r for r in csv.DictReader(DESCRIPTIONS_CSV.open()) if r["filename"] in GIVEN]
    path = tmp_path_factory.mktemp("given") / "given.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["filename", "description"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def truth_csv(folder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("truth") / "truth.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mos"])
        for i, p in enumerate(list_images(folder)):
            w.writerow([p.name, 30 + 7 * i])
    return path


def _clip_flags(clip: dict) -> list[str]:
    return ["--model", clip["model"], "--pretrained", clip["pretrained"], "--model_config_dir", clip["model_config_dir"]]


def _args(folder, out, tiny_vlm, tiny_clip, given_csv, *extra) -> list[str]:
    return ["run", str(folder), "--out", str(out), "--describer", str(tiny_vlm), "--descriptions", str(given_csv),
            "--chunk_size", "3", "--max_tokens", "12", "--progress", "false", *_clip_flags(tiny_clip), *extra]


def _rows(out: Path) -> list[dict]:
    with (out / "scores.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def run_out(folder, tiny_vlm, tiny_clip, given_csv, truth_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(_args(folder, out, tiny_vlm, tiny_clip, given_csv, "--truth", str(truth_csv))) == 1  # one bad file
    return out


def test_one_row_per_image_in_input_order_and_bad_files_named(run_out, folder):
    rows = _rows(run_out)
    assert [r["filename"] for r in rows] == [p.name for p in list_images(folder)]
    bad = [r for r in rows if r["status"] != "ok"]
    assert [r["filename"] for r in bad] == ["zz_truncated.png"]
    assert "zz_truncated.png" in bad[0]["error"] and bad[0]["score_z"] == ""
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 7 and all(r["score_z"] and r["score_mos"] and r["overlay"] for r in ok)
    assert {r["filename"] for r in ok if r["description_source"] == "given"} == GIVEN
    assert {r["description_source"] for r in ok if r["filename"] not in GIVEN} == {"describer"}


def test_scores_equal_core_called_directly(run_out, folder):
    from realness.core import CoreModel

    rows = [r for r in _rows(run_out) if r["status"] == "ok"]
    core = CoreModel.from_pretrained("offline")
    z = core.predict([load_image(folder / r["filename"]) for r in rows], [r["description"] for r in rows], batch_size=1)
    np.testing.assert_allclose([float(r["score_z"]) for r in rows], z.numpy(), atol=1e-5)
    np.testing.assert_allclose([float(r["score_mos"]) for r in rows], [core.to_mos(v) for v in z.tolist()], atol=1e-3)


def test_descriptions_are_the_describers_and_match_scores_csv(run_out, folder, tiny_vlm):
    from describe.engines import create_engine
    from realness.answers import parse_answer

    records = [json.loads(line) for line in (run_out / "descriptions.jsonl").read_text().splitlines()]
    by_name = {r["filename"]: r for r in _rows(run_out)}
    # every description the run used, with where it came from; the given ones verbatim
    assert sorted(r["filename"] for r in records) == sorted(n for n, r in by_name.items() if r["status"] == "ok")
    assert {r["filename"] for r in records if r["source"] == "given"} == GIVEN
    assert all(by_name[r["filename"]]["description"] == r["description"] for r in records if r["source"] == "given")
    records = [r for r in records if r["source"] == "describer"]
    assert len(records) == 5
    engine = create_engine("transformers", str(tiny_vlm), max_new_tokens=12, device="cpu")
    direct = engine.generate([load_image(folder / r["filename"]) for r in records], 8)
    for rec, text in zip(records, direct):
        assert rec["status"] == "ok" and rec["description"] == parse_answer(text).text
        assert by_name[rec["filename"]]["description"] == text


def test_maps_match_images_and_description_verdicts(run_out, folder):
    for r in _rows(run_out):
        if r["status"] != "ok":
            continue
        image = load_image(folder / r["filename"])
        rmap = RealnessMap.load(run_out / "maps" / f"{r['filename']}.npz")
        assert rmap.map.shape == (image.height, image.width)
        assert rmap.flat == (r["verdict"] == "no")
        assert (rmap.map.min(), rmap.map.max()) == ((0.0, 0.0) if rmap.flat else (0.0, 1.0))
        overlay = Image.open(run_out / r["overlay"])
        assert max(overlay.size) == min(1024, max(image.size))
    # portrait.jpg's given description is a "No": a flat map, not an invented hot spot
    assert next(r for r in _rows(run_out) if r["filename"] == "portrait.jpg")["verdict"] == "no"


def test_summary_has_stage_times_and_correlation(run_out, truth_csv):
    s = json.loads((run_out / "summary.json").read_text())
    assert s["images"] == 8 and s["ok"] == 7 and list(s["failed"]) == ["zz_truncated.png"]
    assert s["failed"]["zz_truncated.png"].startswith("read: ")
    assert set(s["seconds"]["per_stage"]) == {"read", "describe", "score", "map", "thumbnail"}
    assert s["seconds"]["per_stage"]["describe"]["images"] == 5 and s["seconds"]["per_stage"]["map"]["images"] == 7
    assert s["placeholders"] == [] and s["models"]["core"]["mos_scale"] is True
    from realness.metrics import correlations

    rows = [r for r in _rows(run_out) if r["status"] == "ok"]
    c = correlations([float(r["score_mos"]) for r in rows], [float(r["mos"]) for r in rows])
    assert s["vs_mos"]["n"] == 7 and s["vs_mos"]["srocc"] == pytest.approx(c["srocc"])
    assert (run_out / "histogram.png").is_file() and (run_out / "scatter.png").is_file()


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (.ci/install installs it from Debian)")
    return exe


def render(html: Path, fragment: str = "") -> tuple[str, list[str]]:
    """(DOM after scripts ran, console messages) from headless Chromium."""
    profile = html.parent / ".chromium-profile"
    r = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--no-first-run", "--disable-background-networking", "--disable-extensions",
                        "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", "--dump-dom",
                        html.resolve().as_uri() + fragment], capture_output=True, text=True, timeout=120)
    shutil.rmtree(profile, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, [line for line in r.stderr.splitlines() if ":CONSOLE" in line]


def test_report_renders_in_chromium_without_console_errors(run_out):
    dom, console = render(run_out / "report.html")
    assert console == []
    names = re.findall(r'<tr class="row[^"]*" data-filename="([^"]+)"', dom)
    assert names == [r["filename"] for r in _rows(run_out)]
    assert dom.count('class="row failed"') == 1 and "zz_truncated.png" in dom
    for src in re.findall(r'<img src="([^"]+)"', dom):  # every picture the page shows exists and decodes
        Image.open(run_out / src).verify()
    assert "histogram.png" in dom and "scatter.png" in dom and "human MOS" in dom


def test_report_sorts_in_the_browser(run_out):
    dom, console = render(run_out / "report.html", "#sort=-score")
    assert console == []
    names = re.findall(r'data-filename="([^"]+)"', dom)
    scores = {r["filename"]: r["score_mos"] for r in _rows(run_out)}
    ok = [n for n in names if scores[n]]
    assert [float(scores[n]) for n in ok] == sorted((float(scores[n]) for n in ok), reverse=True)
    assert names[-1] == "zz_truncated.png"  # no score: last either way
    assert 'aria-sort="descending"' in dom


def test_rerun_skips_done_images_and_retries_failures(run_out, folder, tiny_vlm, tiny_clip, given_csv, truth_csv):
    before = (run_out / "scores.csv").read_text()
    lines = len((run_out / "results.jsonl").read_text().splitlines())
    assert main(_args(folder, run_out, tiny_vlm, tiny_clip, given_csv, "--truth", str(truth_csv))) == 1
    s = json.loads((run_out / "summary.json").read_text())
    assert s["skipped_already_done"] == 7 and s["processed_this_run"] == 1  # only the bad file is retried
    assert (run_out / "scores.csv").read_text() == before
    assert len((run_out / "results.jsonl").read_text().splitlines()) == lines + 1


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_resume_after_a_kill_or_sigterm_completes_without_duplicates(folder, tiny_vlm, tiny_clip, given_csv, tmp_path, stop):
    """Killed outright, or stopped by SIGTERM (`kill`, `docker stop`), which the command handles as Ctrl-C: exit
    130 with its one line. Either way the rerun does only what is left, each image once."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "realness.cli", *_args(folder, out, tiny_vlm, tiny_clip, given_csv)]
    cmd[cmd.index("--chunk_size") + 1] = "1"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    err = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if results.is_file() and len(results.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    if stop == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    else:  # to the command's own process, as a supervisor does
        proc.send_signal(stop)
        assert proc.wait(timeout=120) == 130
        assert "interrupted; rerun the same command" in (tmp_path / "stderr.txt").read_text()
    err.close()
    done_before = len(results.read_text().splitlines())
    assert 3 <= done_before < 8 and not (out / "scores.csv").exists()

    assert main(_args(folder, out, tiny_vlm, tiny_clip, given_csv)) == 1
    s = json.loads((out / "summary.json").read_text())
    assert s["skipped_already_done"] == done_before and s["processed_this_run"] == 8 - done_before
    rows = _rows(out)
    assert [r["filename"] for r in rows] == [p.name for p in list_images(folder)]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["filename"] for r in records) == sorted(r["filename"] for r in rows)  # each image once
    described = [json.loads(line)["sha256"] for line in (out / "descriptions.jsonl").read_text().splitlines()]
    assert len(described) == len(set(described)) == 7  # nothing described (or listed) twice
    from realness.core import CoreModel

    ok = [r for r in rows if r["status"] == "ok"]
    z = CoreModel.from_pretrained("offline").predict([load_image(folder / r["filename"]) for r in ok],
                                                     [r["description"] for r in ok])
    np.testing.assert_allclose([float(r["score_z"]) for r in ok], z.numpy(), atol=1e-5)


def test_dead_server_fails_only_the_images_that_need_it(folder, tiny_clip, given_csv, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    out = tmp_path / "out"
    code = main(["run", str(folder), "--out", str(out), "--server", f"http://127.0.0.1:{port}", "--retries", "0",
                 "--descriptions", str(given_csv), "--progress", "false", "--dream", "false", *_clip_flags(tiny_clip)])
    assert code == 1
    rows = {r["filename"]: r for r in _rows(out)}
    assert {n for n, r in rows.items() if r["status"] == "ok"} == GIVEN
    for name, r in rows.items():
        if name not in GIVEN and name != "zz_truncated.png":
            assert f"127.0.0.1:{port}" in r["error"] and r["score_z"] == ""
    assert not any(r["overlay"] for r in rows.values())  # --dream false: no maps


def test_describer_none_needs_descriptions(folder, given_csv, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(folder), "--out", str(out), "--describer", "none", "--descriptions", str(given_csv),
                 "--dream", "false", "--progress", "false"]) == 1
    rows = _rows(out)
    assert {r["filename"] for r in rows if r["status"] == "ok"} == GIVEN
    assert all("--describer none" in r["error"] for r in rows if r["status"] != "ok" and r["filename"] != "zz_truncated.png")


def test_a_missing_core_fails_before_anything_is_described(folder, tiny_vlm, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(folder), "--out", str(out), "--describer", str(tiny_vlm), "--core", str(tmp_path / "nope"),
                 "--dream", "false", "--progress", "false"]) == 2  # nothing could be done
    assert "nope" in capsys.readouterr().err
    assert not (out / "descriptions.jsonl").exists() and not (out / "results.jsonl").exists()


def _gated_describer(tiny_vlm, folder: Path, passed: bool) -> Path:
    """A copy of the tiny describer with a distillation gate report beside it."""
    shutil.copytree(tiny_vlm, folder)
    gate = {"passed": passed, "reasons": [] if passed else ["candidate SROCC 0.40 is not above the image_only "
                                                            "baseline's 0.50"]}
    (folder / "gate.json").write_text(json.dumps(gate))
    return folder


def test_auto_core_follows_the_describers_gate(tiny_vlm, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    from describe.engines import DEFAULT_DESCRIBER, expected_describer
    from describe.small import SMALL_DESCRIBER
    from realness.pipeline import RunConfig, choose_core

    paths = [Path("a.jpg"), Path("b.jpg")]
    failed = str(_gated_describer(tiny_vlm, tmp_path / "failed", passed=False))
    passed = str(_gated_describer(tiny_vlm, tmp_path / "passed", passed=True))

    def choice(given=None, **kw):
        return choose_core(RunConfig(images="x", **kw), paths, given or {})

    assert choice(describer=failed)[0] == "offline-image" and "image_only baseline" in choice(describer=failed)[1]
    assert choice(describer=passed) == ("offline", "") and choice(describer=str(tiny_vlm)) == ("offline", "")
    assert choice(describer=str(tiny_vlm), adapter=failed)[0] == "offline-image"  # the adapter's own gate
    assert choice(describer=SMALL_DESCRIBER)[0] == "offline-image"  # its shipped gate.json fails
    assert choice(describer="tiny-qwen2vl")[0] == "offline-image"  # random text
    # the describer writes nothing, or its gate is unknown: the fusion model
    assert choice(describer=failed, given={"a.jpg": "x", "b.jpg": "y"}) == ("offline", "")
    assert choice(describer=failed, given={"a.jpg": "x"})[0] == "offline-image"  # one model for the whole run
    assert choice(describer="none") == ("offline", "")
    assert choice(describer=failed, server=["http://127.0.0.1:1"]) == ("offline", "")
    # an explicit --core is kept as it is
    assert choice(describer=failed, core="offline") == ("offline", "")
    # the default describer stands in with the bundled one only when the hub is offline and it is not cached
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    assert expected_describer(DEFAULT_DESCRIBER) == DEFAULT_DESCRIBER
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert expected_describer(DEFAULT_DESCRIBER) == SMALL_DESCRIBER
    assert expected_describer(DEFAULT_DESCRIBER, fallback=False) == DEFAULT_DESCRIBER


def test_a_run_whose_describer_failed_its_gate_scores_from_the_image(folder, tiny_vlm, tmp_path):
    describer = _gated_describer(tiny_vlm, tmp_path / "describer", passed=False)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("portrait.jpg", "landscape_flat.jpg"):
        shutil.copy(folder / name, images / name)
    out = tmp_path / "out"
    args = ["run", str(images), "--out", str(out), "--describer", str(describer), "--dream", "false", "--progress", "false"]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["models"]["core"]["name"] == "offline-image" and "image_only baseline" in s["models"]["core"]["chosen"]
    assert json.loads((out / "run.json").read_text())["core"] == "offline-image"
    from realness.core import CoreModel

    rows = _rows(out)
    z = CoreModel.from_pretrained("offline-image").predict([load_image(images / r["filename"]) for r in rows])
    np.testing.assert_allclose([float(r["score_z"]) for r in rows], z.numpy(), atol=1e-5)
    fusion = CoreModel.from_pretrained("offline").predict([load_image(images / r["filename"]) for r in rows],
                                                          [r["description"] for r in rows])
    assert not np.allclose(z.numpy(), fusion.numpy(), atol=1e-3)
    assert main(args) == 0  # resumes with auto: the same choice, nothing redone
    assert json.loads((out / "summary.json").read_text())["skipped_already_done"] == 2
    assert main([*args, "--core", "offline"]) == 2  # scoring the rest with another model would mix two setups


def test_refuses_to_overwrite_without_resume(run_out, folder, tiny_vlm, tiny_clip, given_csv, capsys):
    assert main(_args(folder, run_out, tiny_vlm, tiny_clip, given_csv, "--resume", "false")) == 2
    assert "already holds a run" in capsys.readouterr().err


def _readme_main_job() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S).group(1)
    return next(line for line in block.splitlines() if "realness run" in line)


def test_readme_main_job_runs_offline_with_the_small_describer(tmp_path):
    """The README's main command, as written, on the bundled samples with no network (the tests run offline)."""
    cmd = _readme_main_job().strip()
    assert cmd.startswith(".venv/bin/realness run realness/samples/images")
    args = cmd.split()[1:]
    args[args.index("--out") + 1] = str(tmp_path / "out")
    env = {**os.environ, "REALNESS_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "realness.cli", *args, "--progress", "false"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["ok"] == 6 and s["models"]["core"]["placeholder"] is False
    # No pretrained VLM or CLIP can be had offline: the bundled small describer stands in for the VLM (real,
    # trained, its measured quality shown), evidence maps for CLIP (real weights: nothing is a placeholder).
    assert s["placeholders"] == []
    maps = s["models"]["maps"]
    assert maps["source"] == "evidence" and maps["stands_in_for"] == "ViT-B-32/openai" and maps["placeholder"] is False
    d = s["models"]["describer"]
    assert d["name"] == "offline/small-describer" and d["stands_in_for"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert d["measured"]["verdict_agreement"] > 0 and "held-out RAISE images" in d["measured"]["summary"]
    assert "offline/small-describer" in r.stdout and "placeholder" not in r.stdout.lower()
    # the console: one warning per fallback, nothing from libraries (no INFO lines, no loading bars)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 3 and all(line.startswith("WARNING") for line in lines), r.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))
    assert all(row["verdict"] in ("yes", "no", "somewhat") for row in rows)
    # its gate failed, so CORE scores from the image alone (--core auto), and says so
    core = s["models"]["core"]
    assert core["name"] == "offline-image" and core["mode"] == "image" and "failed its distillation gate" in core["chosen"]
    assert "CORE offline-image" in r.stdout
    from realness.core import CoreModel

    z = CoreModel.from_pretrained("offline-image").predict([load_image(IMAGES_DIR / row["filename"]) for row in rows])
    np.testing.assert_allclose([float(row["score_z"]) for row in rows], z.numpy(), atol=1e-5)
    # the bundled describer's verdict guide reads the same image-only CORE: each verdict agrees with the score shown
    from describe.small import BUNDLED
    from describe.verdict import VerdictGuide

    guide = VerdictGuide.load(BUNDLED)
    assert d["verdict_guide"]["core"] == "offline-image"
    assert [row["verdict"] for row in rows] == [guide.verdict(float(row["score_z"])) for row in rows]
    dom, console = render(tmp_path / "out" / "report.html")
    assert console == [] and dom.count("Placeholder") == 0 and "Offline describer" in dom and "Image-only scores" in dom
    assert "Verdicts from image-only CORE" in dom and "Evidence maps" in dom
    assert "means nothing" not in dom
    # the maps: evidence with labelled boxes where detectors found regions (the portraits hold a face), each
    # recorded in results.jsonl and the .npz; overlays are not a random map's
    from realness.dream.maps import RealnessMap

    records = {r["filename"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert all(r["map_source"] == "evidence" for r in records.values())
    assert any(g["label"] == "face" for g in records["portrait_warped_face.jpg"]["regions"])
    assert dom.count('class="region"') == sum(len(r["regions"]) for r in records.values()) > 0
    for _name, rec in records.items():
        m = RealnessMap.load(tmp_path / "out" / rec["map"])
        assert m.source == "evidence" and m.regions == rec["regions"] and not m.flat
        noise = np.random.default_rng(0).random(m.map.shape)
        assert abs(np.corrcoef(m.map.ravel(), noise.ravel())[0, 1]) < 0.1 and m.map.std() > 0.05


def test_manifest_input_brings_its_own_descriptions_and_mos(folder, tmp_path):
    rows = list(csv.DictReader(DESCRIPTIONS_CSV.open()))
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mos", "description"])
        for i, r in enumerate(rows):
            w.writerow([str(folder / r["filename"]), 20 + 10 * i, r["description"]])
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--out", str(out), "--describer", "none", "--dream", "false",
                 "--progress", "false"]) == 0
    got = _rows(out)
    assert [r["filename"] for r in got] == [r["filename"] for r in rows]  # manifest order
    assert [float(r["mos"]) for r in got] == [20 + 10 * i for i in range(len(rows))]
    assert all(r["description_source"] == "given" for r in got)
    s = json.loads((out / "summary.json").read_text())
    assert s["vs_mos"]["n"] == 6 and (out / "scatter.png").is_file()
    dom, console = render(out / "report.html")
    assert console == [] and dom.count('class="row"') == 6
    dom, console = render(out / "report.html", "#sort=verdict")  # by severity: no, somewhat, yes
    verdicts = {r["filename"]: r["verdict"] for r in got}
    shown = [verdicts[n] for n in re.findall(r'data-filename="([^"]+)"', dom)]
    assert console == [] and shown == sorted(shown, key=["no", "somewhat", "yes"].index)


def test_a_batch_failure_is_narrowed_to_the_image_that_caused_it():
    from realness.pipeline import _new_record
    from realness.stages import per_image as _per_image

    todo = [_new_record(Path(f"/x/{i}.png"), str(i), None) for i in range(4)]
    seen = []

    def stage(idx):  # fails whenever image 2 is in the batch, like a CORE error on one bad input
        if 2 in idx:
            raise RuntimeError("bad input 2")
        seen.extend(idx)

    _per_image([0, 1, 2, 3], todo, "score", stage)
    assert [r["status"] for r in todo] == ["ok", "ok", "failed", "ok"]
    assert todo[2]["stage"] == "score" and todo[2]["error"] == "bad input 2"
    assert sorted(seen) == [0, 1, 3] and all("score" in r["seconds"] for r in todo)


def test_resume_refuses_other_options(run_out, folder, tiny_vlm, tiny_clip, given_csv, capsys):
    before = (run_out / "results.jsonl").read_text()
    args = _args(folder, run_out, tiny_vlm, tiny_clip, given_csv, "--method", "window")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "other options" in err and "dream_config" in err and str(run_out) in err
    assert (run_out / "results.jsonl").read_text() == before  # nothing touched


def test_hub_probe_goes_offline_only_when_the_host_is_unreachable(monkeypatch):
    import huggingface_hub.constants as hub

    from realness.hub import hub_offline_if_unreachable

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "https://host.invalid")  # .invalid never resolves (RFC 2606)
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub_offline_if_unreachable(timeout=1) is False and hub.HF_HUB_OFFLINE is False  # a proxy decides
    monkeypatch.delenv("HTTPS_PROXY")
    assert hub_offline_if_unreachable(timeout=1) is True and hub.HF_HUB_OFFLINE is True
    assert os.environ["HF_HUB_OFFLINE"] == "1"
