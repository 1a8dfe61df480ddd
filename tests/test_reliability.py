"""Reliability round two (issue #30), the findings fixed so far: each test fails on the code before the fix."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from realness.cli import main


def test_bare_realness_and_an_unknown_command_are_bad_usage(capsys):
    assert main([]) == 2
    assert "usage: realness COMMAND" in capsys.readouterr().out
    assert main(["bogus"]) == 2
    captured = capsys.readouterr()
    assert "error: unknown command 'bogus'" in captured.err and "usage: realness COMMAND" in captured.out
    assert main(["--help"]) == 0


@pytest.mark.parametrize("cell", ["nan", "abc", "NaN"])
def test_a_manifest_score_that_is_not_a_number_is_refused_naming_the_row(tmp_path, cell, capsys):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (32, 32), (90, 120, 150)).save(tmp_path / name)
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows([["image", "mos", "description"], ["a.png", "55", "Yes, odd."], ["b.png", cell, "No, fine."]])
    args = ["run", str(manifest), "--out", str(tmp_path / "out"), "--describer", "none", "--dream", "false",
            "--progress", "false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "m.csv" in err and "row 2 (b.png)" in err and "not a number" in err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_a_manifest_without_a_score_for_some_images_is_fine(tmp_path):
    from realness.data import manifest_inputs

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "b.png")
    (tmp_path / "m.csv").write_text("image,mos\na.png,55\nb.png,\n")
    paths, _, mos = manifest_inputs(tmp_path / "m.csv")
    assert [p.name for p in paths] == ["a.png", "b.png"] and mos == {"a.png": 55.0}


@pytest.mark.slow
def test_a_100_megapixel_photo_is_downscaled_not_refused(tmp_path):
    """12240 x 8160 (99.9 MP) is above Pillow's 89.5 MP warning but inside the project's own limit."""
    from realness.images import PIXEL_BUDGET, load_image

    path = tmp_path / "big.jpg"
    Image.new("RGB", (12240, 8160), (120, 130, 140)).save(path, quality=50)
    img = load_image(path)
    assert img.width * img.height <= PIXEL_BUDGET and abs(img.width / img.height - 1.5) < 0.01
    assert np.asarray(img)[0, 0].tolist() == pytest.approx([120, 130, 140], abs=3)


class _Server:
    """An OpenAI-compatible chat server on loopback whose answer (`content`) and delay a test sets."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.content, self.delay = "Somewhat. The edges look soft.", 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                import time

                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(outer.delay)
                msg = {"role": "assistant", "content": outer.content}
                body = json.dumps({"choices": [{"message": msg}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.http.shutdown()


def test_annotate_counts_an_empty_answer_as_a_failure_and_redoes_it_on_resume(tmp_path, capsys, server):
    """A server that answers `content: null` (or spaces): annotate fails those images (exit 2 when all fail)
    and the rerun, once the server answers, describes them."""
    import json

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 90, 120)).save(images / f"i{i}.png")
    out = tmp_path / "d.jsonl"
    args = ["annotate", "--images", str(images), "--out", str(out), "--server", server.url,
            "--retries", "1", "--backoff", "0.01", "--progress", "false"]
    for empty in (None, "   "):
        server.content = empty
        assert main(args) == 2
        assert "annotated 0, skipped 0 already done, failed 2" in capsys.readouterr().out
    server.content = "Somewhat. The edges look soft."
    assert main(args) == 0
    assert "annotated 2, skipped 0 already done, failed 0" in capsys.readouterr().out
    ok = [r for r in map(json.loads, out.read_text().splitlines()) if r["status"] == "ok"]
    assert sorted(r["filename"] for r in ok) == ["i0.png", "i1.png"]
    assert all(r["description"] == "Somewhat. The edges look soft." for r in ok)


def _as_unprivileged(cmd: list[str]) -> list[str]:
    """`cmd` run so that file permissions apply: as root, without the capabilities that bypass them."""
    import os
    import shutil

    if os.geteuid() != 0:
        return cmd
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv to drop root's file-permission override")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]


def test_an_unreadable_file_fails_alone_in_annotate_and_run(tmp_path, server):
    """A file without read permission: annotate describes the others and records that one as a failure
    (exit 1, resumable); run says 'permission denied', not 'corrupt'."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (60 * i, 90, 120)).save(images / f"i{i}.png")
    (images / "i1.png").chmod(0)
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "d.jsonl"
    cli = [sys.executable, "-m", "realness.cli"]
    annotate = [*cli, "annotate", "--images", str(images), "--out", str(out), "--server", server.url,
                "--retries", "0", "--progress", "false"]
    proc = subprocess.run(_as_unprivileged(annotate), cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "annotated 2" in proc.stdout and "failed 1" in proc.stdout
    recs = {r["filename"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert recs["i1.png"]["status"] == "failed" and "i1.png" in recs["i1.png"]["error"]
    assert "ermission denied" in recs["i1.png"]["error"]
    assert recs["i0.png"]["status"] == recs["i2.png"]["status"] == "ok"
    desc = tmp_path / "desc.csv"
    desc.write_text("filename,description\n" + "".join(f"i{i}.png,No. It looks fine.\n" for i in range(3)))
    run = [*cli, "run", str(images), "--out", str(tmp_path / "run"), "--describer", "none", "--descriptions", str(desc),
           "--dream", "false", "--progress", "false"]
    proc = subprocess.run(_as_unprivileged(run), cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "i1.png" in proc.stdout and "permission denied" in proc.stdout and "corrupt" not in proc.stdout
    (images / "i1.png").chmod(0o644)  # readable again: the resumed annotate describes it
    assert main(annotate[3:]) == 0


def _samples(tmp_path):
    from pathlib import Path

    src = Path(__file__).resolve().parent.parent / "realness" / "samples"
    desc = tmp_path / "d.csv"
    desc.write_text((src / "descriptions.csv").read_text())
    return src / "images", desc


def test_an_edited_descriptions_file_is_not_resumed_with_stale_results(tmp_path, capsys):
    images, desc = _samples(tmp_path)
    args = ["run", str(images), "--out", str(tmp_path / "out"), "--describer", "none", "--descriptions", str(desc),
            "--dream", "false", "--progress", "false"]
    assert main(args) == 0
    assert main(args) == 0  # the same file: resumed, nothing redone
    desc.write_text(desc.read_text().replace("the face is distorted", "the face is fine"))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "descriptions_sha256" in err and "other options" in err


def test_a_start_that_did_nothing_locks_in_no_options(tmp_path, capsys):
    images, desc = _samples(tmp_path)
    out = tmp_path / "out"
    broken = tmp_path / "broken-core"
    broken.mkdir()
    (broken / "config.json").write_text('{"mode": "image"}')  # found at the start, fails to load on first use
    base = ["run", str(images), "--out", str(out), "--describer", "none", "--descriptions", str(desc), "--dream", "false",
            "--progress", "false"]
    assert main([*base, "--core", str(broken)]) == 2  # CORE fails on first use: nothing done
    assert not (out / "run.json").exists()
    assert main([*base, "--core", "offline-image"]) == 0  # the corrected command is not refused


def test_bad_dense_fix_and_an_empty_annotate_folder_fail_at_once(tmp_path, capsys):
    from realness.dream import DreamConfig

    with pytest.raises(ValueError, match="dense_fix must be one of"):
        DreamConfig(dense_fix="bogus")
    (tmp_path / "empty").mkdir()
    assert main(["annotate", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "d.jsonl"),
                 "--server", "http://127.0.0.1:9", "--progress", "false"]) == 2
    assert "no images found" in capsys.readouterr().err


def test_a_missing_adapter_is_an_error_not_a_silent_fallback(tmp_path, capsys):
    images, desc = _samples(tmp_path)
    args = ["run", str(images), "--out", str(tmp_path / "out"), "--adapter", str(tmp_path / "nonexistent"),
            "--dream", "false", "--progress", "false"]
    assert main(args) == 2
    assert f"--adapter {tmp_path / 'nonexistent'}: no such folder" in capsys.readouterr().err
    from realness.files import is_local_path

    assert is_local_path("/x/y") and is_local_path("./a") and is_local_path("runs/d/adapter")
    assert not is_local_path("owner/name") and not is_local_path("offline")
    # the same for a describer given as a path ("Repo id must be in the form ..." before)
    assert main([*args[:4], "--describer", "/nope/describer", "--dream", "false", "--progress", "false"]) == 2
    assert "--describer /nope/describer: no such folder" in capsys.readouterr().err
    assert main(["annotate", "--images", str(images), "--out", str(tmp_path / "d.jsonl"), "--engine", "transformers",
                 "--describer", "/nope/describer", "--progress", "false"]) == 2
    assert "--describer /nope/describer: no such folder" in capsys.readouterr().err


def test_entries_that_are_not_image_files_are_listed_with_why_and_outputs_are_never_inputs(tmp_path, capsys):
    import json
    import os

    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (32, 32), (90, 120, 150)).save(images / "a.png")
    Image.new("RGB", (32, 32)).save(images / "sub" / "deep.png")
    (images / "folder.png").mkdir()
    os.mkfifo(images / "pipe.png")
    (images / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (images / "loop.png").symlink_to(images / "loop.png")
    (images / "notes.txt").write_text("hi")
    desc = tmp_path / "d.csv"
    desc.write_text("filename,description\na.png,No. It looks fine.\n")
    args = ["--describer", "none", "--descriptions", str(desc), "--dream", "false", "--progress", "false"]
    assert main(["run", str(images), "--out", str(images / "run"), *args]) == 0
    s = json.loads((images / "run" / "summary.json").read_text())
    why = s["skipped_reasons"]
    assert sorted(why) == ["dangling.png", "folder.png", "loop.png", "notes.txt", "pipe.png", "sub"]  # not run/
    assert "broken symbolic link" in why["dangling.png"] and "loop" in why["loop.png"]
    assert "FIFO" in why["pipe.png"] and "folder" in why["folder.png"] and "subfolders" in why["sub"]
    assert why["notes.txt"] == "no image extension" and s["ok"] == 1
    out = capsys.readouterr().out
    assert "left out pipe.png: a FIFO, not a regular file" in out and "1 file(s) without an image extension" in out
    # a second run into the images folder itself is refused: its histogram.png would be read as an image
    assert main(["run", str(images), "--out", str(images), *args]) == 2
    assert "is the images folder" in capsys.readouterr().err
    assert not (images / "results.jsonl").exists()


def test_every_reader_of_descriptions_skips_a_torn_line_and_says_so_once(tmp_path, caplog, capsys):
    """annotate's output after a kill mid-line: score-core, map, run and the gate read it (skipping that line
    with one warning naming the file and line), and once annotate resumes, no one warns again."""
    import logging

    from realness.data import load_descriptions

    images, _ = _samples(tmp_path)
    names = sorted(p.name for p in images.iterdir())[:3]
    d = tmp_path / "d.jsonl"
    lines = [f'{{"filename": "{n}", "status": "ok", "description": "Yes. The {n} looks odd."}}' for n in names]
    d.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])  # the third record torn by a kill
    with caplog.at_level(logging.WARNING):
        assert sorted(load_descriptions(d)) == names[:2]
    assert "d.jsonl" in caplog.text and "line 3" in caplog.text and caplog.text.count("malformed") == 1
    caplog.clear()
    assert main(["score-core", "--model", "offline", "--images", str(images), "--descriptions", str(d),
                 "--out", str(tmp_path / "s.csv"), "--no-progress"]) in (0, 1)
    assert "line 3" in caplog.text and "not valid JSON" not in capsys.readouterr().err
    from realness.files import JsonlWriter

    JsonlWriter(d).close()  # what annotate does on resume: the fragment goes, the line is redone
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert sorted(load_descriptions(d)) == names[:2]
    assert "malformed" not in caplog.text


def test_run_against_a_hanging_server_is_bounded_by_timeout_and_retries(tmp_path, server, capsys):
    import json
    import time

    images, _ = _samples(tmp_path)
    server.delay = 30.0  # a server that accepts the request and never answers in time
    args = ["run", str(images), "--out", str(tmp_path / "out"), "--server", server.url, "--timeout", "0.5",
            "--retries", "1", "--backoff", "0.05", "--core", "offline-image", "--dream", "false", "--progress", "false"]
    start = time.perf_counter()
    assert main(args) == 2  # every image failed at describe
    assert time.perf_counter() - start < 25  # 6 images x 2 attempts x 0.5 s, 4 in flight; not 6 x 120 s
    recs = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and all(r["stage"] == "describe" and "Timeout" in r["error"] for r in recs)
    assert main([*args[:-2], "--timeout", "0", "--progress", "false"]) == 2
    assert "--timeout must be above 0" in capsys.readouterr().err


def test_input_errors_are_one_line_not_internal_bugs(tmp_path, capsys):
    """Each case printed 'an unexpected error ... please report it' (or a misleading line) before."""
    import json

    images, _ = _samples(tmp_path)
    names = sorted(p.name for p in images.iterdir())

    def fails(args, *needles):
        try:
            code = main(args)
        except SystemExit as stop:  # argparse's own usage errors
            code = stop.code
        assert code == 2, args
        err = capsys.readouterr().err
        assert "please report it" not in err and all(n in err for n in needles), err

    # eval: constant predictions, and --n-boot 0 (no intervals, still the correlations)
    scores, truth = tmp_path / "s.csv", tmp_path / "t.csv"
    scores.write_text("filename,score_z\n" + "".join(f"{n},1\n" for n in names))
    truth.write_text("image,mos\n" + "".join(f"{n},{10 * k}\n" for k, n in enumerate(names)))
    fails(["eval", "--scores", str(scores), "--truth", str(truth), "--out", str(tmp_path / "e")], "s.csv", "constant")
    scores.write_text("filename,score_z\n" + "".join(f"{n},{k * k}\n" for k, n in enumerate(names)))
    assert main(["eval", "--scores", str(scores), "--truth", str(truth), "--out", str(tmp_path / "e"), "--n-boot", "0"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["srocc"] == pytest.approx(1.0) and metrics["srocc_ci95"] is None
    # a YAML value of the wrong type names the file and the key; a boolean written as text is read as one
    bad = tmp_path / "c.yaml"
    bad.write_text("chunk_size: [1, 2]\n")
    fails(["run", str(images), "--out", str(tmp_path / "o"), "--config", str(bad)], "c.yaml", "chunk_size", "integer")
    from realness.argparsing import parse_dataclasses
    from realness.dream.configuration import DreamConfig
    from realness.pipeline import RunConfig

    bad.write_text('dream: "false"\nchunk_size: "4"\n')
    cfg, _ = parse_dataclasses([RunConfig, DreamConfig], ["x", "--config", str(bad)])
    assert cfg.dream is False and cfg.chunk_size == 4
    # a GPU this machine lacks, before anything loads or is written
    import torch

    if not torch.cuda.is_available():
        fails(["run", str(images), "--out", str(tmp_path / "g"), "--device", "cuda"], "--device cuda", "use --device "
                                                                                                       "cpu")
        assert not (tmp_path / "g").exists()
    fails(["score-core", "--model", "offline", "--images", str(images), "--device", "tpu9"], "--device tpu9")


def test_tables_as_people_save_them_are_read(tmp_path, caplog):
    """A description longer than csv's 131,072-character cell limit, ;- and tab-separated files, a .json
    array, an unquoted comma (warned, not a crash), and an image given where a table belongs."""
    import logging

    from realness.data import DataError, load_descriptions

    long_text = "Yes. " + "the fence repeats " * 10_000
    (tmp_path / "long.csv").write_text(f'filename,description\na.png,"{long_text}"\n')
    assert load_descriptions(tmp_path / "long.csv")["a.png"] == long_text.strip()
    (tmp_path / "semi.csv").write_text("filename;description\na.png;Yes. Odd, very.\n")
    (tmp_path / "tab.tsv").write_text("filename\tdescription\na.png\tYes. Odd, very.\n")
    (tmp_path / "arr.json").write_text('[{"filename": "a.png", "description": "Yes. Odd, very."}]')
    for name in ("semi.csv", "tab.tsv", "arr.json"):
        assert load_descriptions(tmp_path / name) == {"a.png": "Yes. Odd, very."}, name
    (tmp_path / "obj.json").write_text('{"a.png": "Yes."}')
    with pytest.raises(DataError, match="JSON array of objects"):
        load_descriptions(tmp_path / "obj.json")
    (tmp_path / "comma.csv").write_text("filename,description\na.png,Yes, the face, is odd\n")
    with caplog.at_level(logging.WARNING):
        assert load_descriptions(tmp_path / "comma.csv") == {"a.png": "Yes"}
    assert "comma.csv" in caplog.text and "unquoted comma" in caplog.text and "row 1" in caplog.text
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    with pytest.raises(DataError, match="an image, not a table"):
        load_descriptions(tmp_path / "photo.png")


def test_one_image_or_a_quoted_glob_of_images_is_a_run(tmp_path):
    import json

    images, desc = _samples(tmp_path)
    names = sorted(p.name for p in images.iterdir())
    common = ["--describer", "none", "--descriptions", str(desc), "--dream", "false", "--progress", "false"]
    assert main(["run", str(images / names[0]), "--out", str(tmp_path / "one"), *common]) == 0
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["ok"] == 1
    pattern = str(images / "*.jpg")
    expected = sorted(p.name for p in images.glob("*.jpg"))
    assert expected
    assert main(["run", pattern, "--out", str(tmp_path / "glob"), *common]) == 0
    rows = [json.loads(line)["filename"] for line in (tmp_path / "glob" / "results.jsonl").read_text().splitlines()]
    assert sorted(rows) == expected


def test_no_fallback_offline_fails_at_once_with_what_to_do(tmp_path, capsys):
    import socket
    import time

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        pytest.skip("the hub is reachable here")
    except OSError:
        pass
    images, _ = _samples(tmp_path)
    start = time.perf_counter()
    assert main(["run", str(images), "--out", str(tmp_path / "o"), "--offline_fallback", "false", "--dream", "false",
                 "--progress", "false"]) == 2
    assert time.perf_counter() - start < 30  # 54 s of hub retries before
    err = capsys.readouterr().err
    assert "not in the local Hugging Face cache" in err and "--offline_fallback true" in err
    assert "Retrying" not in err and "please report it" not in err


def test_a_name_near_the_file_system_limit_gets_its_map(tmp_path):
    """A 244-byte file name (the limit is 255): its map, thumbnail and overlay names are shortened, not refused."""
    import json

    from realness.files import MAX_OUTPUT_NAME_BYTES, output_name

    images = tmp_path / "imgs"
    images.mkdir()
    name = "a" * 240 + ".png"
    Image.new("RGB", (64, 48), (150, 90, 60)).save(images / name)
    desc = tmp_path / "d.csv"
    desc.write_text(f"filename,description\n{name},Yes. The texture repeats.\n")
    out = tmp_path / "out"
    assert main(["run", str(images), "--out", str(out), "--describer", "none", "--descriptions", str(desc),
                 "--core", "offline", "--progress", "false"]) == 0
    rec = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert rec["status"] == "ok" and (out / rec["map"]).is_file() and (out / rec["thumb"]).is_file()
    short = output_name(name)
    assert len(short.encode()) <= MAX_OUTPUT_NAME_BYTES and short.endswith(".png") and short != output_name("a" * 241 + ".png")
    assert main(["map", "--images", str(images), "--descriptions", str(desc), "--out", str(tmp_path / "maps"),
                 "--progress", "false"]) == 0
    assert (tmp_path / "maps" / f"{short}_overlay.png").is_file()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB file system (tmpfs; needs root) for outputs: it fills up mid-run like a real disk."""
    import os
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("needs root and tmpfs to make a small file system")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_fails_the_images_it_cannot_write_and_keeps_nothing_of_them(tmp_path, small_disk, capsys):
    """The default chunk size, maps filling a real (small) disk: the run goes on, each failed image names the
    file it could not write, none of its outputs is left behind, and a rerun with room redoes only those."""
    import json
    import shutil

    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(10):  # noise compresses badly: every overlay is large
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(images / f"n{k}.png")
    desc = tmp_path / "d.csv"
    desc.write_text("filename,description\n" + "".join(f"n{k}.png,Yes. The texture repeats.\n" for k in range(10)))
    out = small_disk / "run"
    args = ["run", str(images), "--out", str(out), "--describer", "none", "--descriptions", str(desc),
            "--core", "offline", "--progress", "false", "--overlay_size", "640"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1, err  # some images done, some failed: the run did not stop
    assert "please report it" not in err and "Traceback" not in err
    recs = {r["filename"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert len(recs) == 10
    failed = [r for r in recs.values() if r["status"] == "failed"]
    assert failed and len(failed) < 10
    for r in failed:
        assert r["stage"] in ("map", "thumbnail", "write") and "No space left" in r["error"], r
        assert str(out) in r["error"]  # names the file it could not write
    from realness.files import output_name

    for r in failed:  # nothing of a failed image is left to fill the disk
        stem = output_name(r["filename"])
        assert not [p for p in out.rglob(f"{stem}*")], r["filename"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    bigger = tmp_path / "room"
    shutil.copytree(out, bigger)  # room again: the rerun redoes the failed images only
    args[args.index(str(out))] = str(bigger)
    assert main(args) == 0
    s = json.loads((bigger / "summary.json").read_text())
    assert s["skipped_already_done"] == 10 - len(failed) and s["processed_this_run"] == len(failed)
