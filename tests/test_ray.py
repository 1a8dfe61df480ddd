"""`realness run --ray` on a local Ray instance bound to 127.0.0.1: the same records as the single-process
run, resume after the driver is SIGKILLed, an actor killed mid-run, and the message without Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_hardening import ROOT, _clip, _folder, _solid

from realness.cli import main

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

COLOURS = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (220, 220, 30), (30, 220, 220), (120, 120, 120)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six images (one unreadable), descriptions for four: the describer writes the rest."""
    root = tmp_path_factory.mktemp("ray-images")
    files = {f"i{k}.png": _solid(c) for k, c in enumerate(COLOURS)} | {"broken.png": b"\x89PNG broken"}
    folder, desc = _folder(root / "imgs", files)
    desc.write_text("filename,description\n" + "".join(f"i{k}.png,\"Yes, the {w} looks warped.\"\n" for k, w in
                                                         enumerate(["face", "hand", "sky", "hat"])))
    return folder, desc


def _args(images, out, tiny_vlm, tiny_clip, *extra) -> list[str]:
    folder, desc = images
    return ["run", str(folder), "--out", str(out), "--descriptions", str(desc), "--describer", str(tiny_vlm),
            "--engine", "transformers", "--max_tokens", "8", "--core", "offline", "--progress", "false",
            "--chunk_size", "2", *_clip(tiny_clip), *extra]


RAY = ["--ray", "--ray_cpus_per_actor", "0.5", "--ray_cpus_local", "2"]


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _listening(pid: int) -> set[tuple[str, str]]:
    """(process name, address) of every listening TCP socket of process `pid`, its descendants and its
    process group: all that a run started."""
    import psutil

    root = psutil.Process(pid)
    procs = {root, *root.children(recursive=True)}
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pid:
                procs.add(p)
        except (ProcessLookupError, psutil.Error):
            pass
    found = set()
    for p in procs:
        try:
            found |= {(p.name(), c.laddr.ip) for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return found


def _records(out: Path) -> dict[str, dict]:
    """The last record per image (a failed image is retried by a rerun and gets a newer record);
    no image is ever done twice."""
    recs = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    ok = [r["filename"] for r in recs if r["status"] == "ok"]
    assert len(ok) == len(set(ok)), "an image was done twice"
    return {r["filename"]: {k: v for k, v in r.items() if k != "seconds"} for r in recs}


def test_ray_run_writes_the_records_of_the_single_process_run(images, tiny_vlm, tiny_clip, tmp_path):
    assert main(_args(images, tmp_path / "one", tiny_vlm, tiny_clip)) == 1  # broken.png fails
    assert main(_args(images, tmp_path / "ray", tiny_vlm, tiny_clip, *RAY)) == 1
    one, on_ray = _records(tmp_path / "one"), _records(tmp_path / "ray")
    assert one.keys() == on_ray.keys() and len(one) == 7
    for name in one:
        a, b = one[name], on_ray[name]
        assert a["score_z"] == pytest.approx(b["score_z"], abs=1e-5) if a["score_z"] is not None else b["score_z"] is None
        assert {k: v for k, v in a.items() if k != "score_z" and k != "score_mos"} == \
               {k: v for k, v in b.items() if k != "score_z" and k != "score_mos"}, name
    assert on_ray["broken.png"]["stage"] == "read" and on_ray["i5.png"]["description_source"] == "describer"
    for rec in one.values():  # the maps the actors wrote are the single-process run's
        if rec["map"]:
            x, y = np.load(tmp_path / "one" / rec["map"]), np.load(tmp_path / "ray" / rec["map"])
            # maps are min-max normalised, which multiplies float noise between thread counts (about 1e-6 in
            # CLIP's raw scores) by 1 / (raw range): compare within what the code guarantees
            lo, hi = json.loads(str(x["meta"]))["raw_range"]
            np.testing.assert_allclose(x["map"], y["map"], atol=max(1e-4, 2e-5 / max(hi - lo, 1e-9)))
            assert (tmp_path / "ray" / rec["thumb"]).is_file()
    def texts(out):
        return sorted((d["filename"], d["description"], d["source"]) for d in
                                   map(json.loads, (out / "descriptions.jsonl").read_text().splitlines()))
    assert texts(tmp_path / "one") == texts(tmp_path / "ray")
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["models"]["describer"]["name"] and summary["models"]["core"]["name"] == "offline"
    # A rerun on Ray skips what is done (by content hash) and redoes only the failed image.
    assert main(_args(images, tmp_path / "ray", tiny_vlm, tiny_clip, *RAY)) == 1
    assert _records(tmp_path / "ray").keys() == one.keys()
    assert json.loads((tmp_path / "ray" / "summary.json").read_text())["skipped_already_done"] == 6


def test_a_driver_killed_mid_run_resumes_on_ray(tiny_clip, tmp_path):
    """24 images, one per block: the driver is SIGKILLed as soon as the first record is written."""
    folder, desc = _folder(tmp_path / "imgs", {f"k{k:02d}.png": _solid((10 * k, 255 - 10 * k, 90)) for k in range(24)})
    out = tmp_path / "run"
    args = ["run", str(folder), "--out", str(out), "--descriptions", str(desc), "--describer", "none", "--core",
            "offline-image", "--progress", "false", "--chunk_size", "1", *_clip(tiny_clip), *RAY]
    proc = subprocess.Popen([sys.executable, "-m", "realness.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().strip():
            break
        time.sleep(0.02)
    try:
        listening = _listening(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # The local instance --ray starts (GCS, raylet, every worker, the driver) listens on loopback only.
    assert {"gcs_server", "raylet"} <= {name for name, _ in listening}, listening
    assert all(ip in LOOPBACK for _, ip in listening), listening
    before = len(results.read_text().splitlines())
    assert 0 < before < 24  # killed mid-run, after its first record
    assert main(args) == 0
    recs = _records(out)  # asserts no image was done twice
    assert len(recs) == 24 and all(r["status"] == "ok" for r in recs.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_already_done"] == before and summary["processed_this_run"] == 24 - before


def test_an_actor_killed_mid_run_is_restarted_and_every_image_ends_once(images, tiny_vlm, tiny_clip, tmp_path):
    """Ray started here; the run joins it (`--ray auto`) while this test kills a map-stage actor's process."""
    import psutil

    from realness.cluster import connect

    connect("local", 2)
    out = tmp_path / "run"
    code: list[int] = []
    worker = threading.Thread(target=lambda: code.append(main(_args(
        images, out, tiny_vlm, tiny_clip, "--ray", "auto", "--ray_cpus_per_actor", "0.5", "--chunk_size", "1"))))
    worker.start()
    killed = None
    deadline = time.time() + 300
    try:
        while worker.is_alive() and time.time() < deadline and killed is None:
            # Ray names an actor's process after its class: ray::MapWorker(MapBatches(MapStage)).
            alive = [p for p in psutil.process_iter(["cmdline"]) if "MapBatches(MapStage)" in " ".join(p.info["cmdline"] or [])]
            if alive and out.joinpath("results.jsonl").exists():  # the map stage is up and work is flowing
                killed = alive[0].pid
                os.kill(killed, signal.SIGKILL)
                assert len(out.joinpath("results.jsonl").read_text().splitlines()) < 7  # mid-run
            time.sleep(0.1)
        worker.join(timeout=300)
    finally:
        ray.shutdown()
    assert killed is not None, "no actor was seen alive"
    assert code == [1]
    recs = _records(out)
    assert len(recs) == 7 and sum(r["status"] == "ok" for r in recs.values()) == 6


def test_without_ray_the_flag_says_how_to_install(images, tiny_vlm, tiny_clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    assert main(_args(images, tmp_path / "x", tiny_vlm, tiny_clip, "--ray")) == 2
    err = capsys.readouterr().err
    assert "pip install 'realness[ray]'" in err and not (tmp_path / "x").exists()


def test_annotate_on_ray_writes_the_direct_mode_records(images, tiny_vlm, tmp_path):
    folder, _ = images
    common = ["annotate", "--engine", "transformers", "--model", str(tiny_vlm), "--images", str(folder),
              "--max_tokens", "8", "--batch_size", "2", "--progress", "false"]
    assert main([*common, "--out", str(tmp_path / "direct.jsonl")]) == 1  # broken.png
    assert main([*common, "--out", str(tmp_path / "ray.jsonl"), "--ray", "--ray_actors", "2",
                 "--ray_cpus_per_actor", "0.5"]) == 1
    keep = ("filename", "sha256", "status", "description", "error", "model")
    def read(f):
        return sorted(tuple(r.get(k) for k in keep) for r in map(json.loads, f.read_text().splitlines()))
    direct, on_ray = read(tmp_path / "direct.jsonl"), read(tmp_path / "ray.jsonl")
    assert direct == on_ray and len(direct) == 7 and sum(r[2] == "ok" for r in direct) == 6
    assert main([*common, "--out", str(tmp_path / "x.jsonl"), "--server", "http://127.0.0.1:9", "--engine", "",
                 "--ray"]) == 2
