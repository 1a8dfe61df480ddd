"""One writer per output: a second `run` or `annotate` into the same output exits at once naming the
holder; a holder killed with SIGKILL leaves nothing that blocks the rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_hardening import ROOT, _folder, _run_args, _solid

from realness.cli import main
from realness.files import OutputBusy, lock_path, one_writer

HOLD = """
import sys, time
from realness.files import one_writer
with one_writer(sys.argv[1], "holder-under-test"):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(target: Path) -> subprocess.Popen:
    """Another process that takes the output's lock and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_one_writer_is_exclusive_and_names_the_holder(tmp_path):
    with one_writer(tmp_path, "first job") as path:
        assert path == tmp_path / ".realness.lock"
        with pytest.raises(OutputBusy, match=f"{tmp_path}: another writer holds it: pid {os.getpid()} on .*first job"):
            with one_writer(tmp_path):
                pass
    with one_writer(tmp_path):  # released at the end of the block
        pass
    assert lock_path(tmp_path / "out.jsonl") == tmp_path / "out.jsonl.lock"


@pytest.mark.slow
def test_second_run_exits_at_once_and_a_killed_holder_does_not_block(tmp_path, tiny_clip, capsys):
    folder, desc = _folder(tmp_path / "imgs", {"a.png": _solid((200, 10, 10)), "b.png": _solid((10, 200, 10))})
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold(out)
    try:
        start = time.perf_counter()
        assert main(_run_args(folder, out, desc, tiny_clip)) == 2
        assert time.perf_counter() - start < 30  # at once: no model was loaded, nothing waited
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(out) in err[0] and f"pid {holder.pid}" in err[0] and "holder-under-test" in err[0]
        assert sorted(p.name for p in out.iterdir()) == [".realness.lock", ".realness.lock.owner"]  # nothing written
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    # The killed holder's lock file and owner note are still there; neither blocks the rerun.
    assert (out / ".realness.lock").exists()
    assert main(_run_args(folder, out, desc, tiny_clip)) == 0
    records = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["filename"] for r in records) == ["a.png", "b.png"]


@pytest.mark.slow
def test_two_concurrent_runs_never_write_a_record_twice(tmp_path, tiny_clip):
    """Two `realness run` processes started together on one folder: one runs, the other exits 2."""
    folder, desc = _folder(tmp_path / "imgs", {f"i{k}.png": _solid((20 * k, 10, 10)) for k in range(6)})
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "realness.cli", *_run_args(folder, out, desc, tiny_clip)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2]
    busy = next(err for code, err in results if code == 2)
    assert "another writer holds it" in busy and "Traceback" not in busy
    names = [json.loads(l)["filename"] for l in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(names) == [f"i{k}.png" for k in range(6)]  # each once


def test_second_annotate_into_the_same_file_exits_2(tmp_path, capsys):
    folder, _ = _folder(tmp_path / "imgs", {"a.png": _solid((200, 10, 10))})
    out = tmp_path / "desc.jsonl"
    holder = _hold(out)
    try:
        code = main(["annotate", "--server", "http://127.0.0.1:9", "--images", str(folder), "--out", str(out),
                     "--progress", "false"])
        assert code == 2
        err = capsys.readouterr().err
        assert f"{out}: another writer holds it: pid {holder.pid}" in err
        assert not out.exists()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    with one_writer(out):  # the kill released it
        pass
