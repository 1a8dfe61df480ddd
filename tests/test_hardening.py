"""Hostile and unusual inputs: bounded memory and disk, no tracebacks, no output-name collisions, one
exit-code rule for every command, JSONL that survives a torn line, validation that names file and row."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realness.cli import main
from realness.files import JsonlWriter, output_name, read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _clip(clip: dict) -> list[str]:
    return ["--model", clip["model"], "--pretrained", clip["pretrained"], "--model_config_dir", clip["model_config_dir"]]


def _solid(colour, size=(64, 48)) -> Image.Image:
    return Image.new("RGB", size, colour)


def _folder(root: Path, images: dict[str, Image.Image | bytes], descriptions: dict[str, str] | None = None):
    """A folder of images (PIL images or raw bytes) and a descriptions CSV for them."""
    folder = root / "images"
    folder.mkdir(parents=True)
    for name, content in images.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            content.save(folder / name, format="JPEG" if name.lower().endswith((".jpg", ".txt")) else "PNG")
    desc = root / "descriptions.csv"
    with desc.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "description"])
        for name in images:
            w.writerow([name, (descriptions or {}).get(name, "Yes, the left edge looks smeared; the sky is too flat.")])
    return folder, desc


def _run_args(folder, out, desc, clip, *extra) -> list[str]:
    return ["run", str(folder), "--out", str(out), "--describer", "none", "--descriptions", str(desc),
            "--core", "offline-image", "--progress", "false", *_clip(clip), *extra]


def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realness.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, **kw)


# ---- names --------------------------------------------------------------------------------------
def test_output_names_are_distinct_stable_and_safe():
    names = ["a b.png", "a_b.png", "a?b.png", "c.png", "c.jpg", "ü ber.png", "..png", "noext", "x y", "x_y"]
    outs = [output_name(n) for n in names]
    assert len(set(outs)) == len(outs)
    assert output_name("a_b.png") == "a_b.png" and output_name("c.jpg") == "c.jpg"  # safe names are kept
    assert output_name("a b.png") == output_name("a b.png") and output_name("a b.png").endswith(".png")
    assert all(set(o) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~ü") for o in outs)


def test_run_keeps_a_b_and_a_underscore_b_apart(tmp_path, tiny_clip):
    """`a b.png` and `a_b.png` used to share `a_b.png`'s thumbnail and map."""
    folder, desc = _folder(tmp_path, {"a b.png": _solid((250, 0, 0)), "a_b.png": _solid((0, 0, 250))})
    out = tmp_path / "out"
    assert main(_run_args(folder, out, desc, tiny_clip)) == 0
    rows = {r["filename"]: r for r in read_jsonl(out / "results.jsonl")}
    assert len({rows[n][k] for n in rows for k in ("thumb",)}) == 2
    assert len({rows[n]["map"] for n in rows}) == 2 and len({rows[n]["overlay"] for n in rows}) == 2
    red = np.asarray(Image.open(out / rows["a b.png"]["thumb"]).convert("RGB")).reshape(-1, 3).mean(0)
    blue = np.asarray(Image.open(out / rows["a_b.png"]["thumb"]).convert("RGB")).reshape(-1, 3).mean(0)
    assert red[0] > 200 > red[2] and blue[2] > 200 > blue[0]


def test_map_writes_c_png_and_c_jpg_separately(tmp_path, tiny_clip):
    folder, desc = _folder(tmp_path, {"c.png": _solid((250, 0, 0)), "c.jpg": _solid((0, 0, 250))})
    out = tmp_path / "maps"
    assert main(["map", "--images", str(folder), "--descriptions", str(desc), "--out", str(out), "--progress", "false",
                 *_clip(tiny_clip)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert sorted(s["mapped"]) == ["c.jpg", "c.png"]
    assert sorted(p.name for p in out.glob("*.npz")) == ["c.jpg.npz", "c.png.npz"]


# ---- torn JSONL ---------------------------------------------------------------------------------
def test_a_torn_jsonl_line_is_skipped_and_the_next_record_survives(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b": "cut her')  # a kill mid-write
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == [{"a": 1}]  # the resuming job's read: skipped, with one warning
    assert "r.jsonl" in caplog.text and "line 2" in caplog.text
    caplog.clear()
    writer = JsonlWriter(path)  # drops the fragment: the next record is a line of its own
    writer.write({"a": 3})
    writer.close()
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == [{"a": 1}, {"a": 3}]
    assert "malformed" not in caplog.text  # nothing is skipped any more, so later runs do not warn again


def test_run_after_a_torn_results_line_redoes_only_that_image(tmp_path, tiny_clip):
    folder, desc = _folder(tmp_path, {f"i{k}.png": _solid((40 * k, 90, 200 - 40 * k)) for k in range(3)})
    out = tmp_path / "out"
    args = _run_args(folder, out, desc, tiny_clip, "--dream", "false")
    assert main(args) == 0
    results = out / "results.jsonl"
    text = results.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    results.write_text(text[: len(text) - len(last) - 1] + last[: len(last) // 2])  # the last record, torn
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["skipped_already_done"], s["processed_this_run"]) == (2, 1)
    assert main(args) == 0  # the redone record was not glued onto the fragment: nothing is redone again
    s = json.loads((out / "summary.json").read_text())
    assert (s["skipped_already_done"], s["processed_this_run"]) == (3, 0)
    assert sorted(r["filename"] for r in read_jsonl(results)) == ["i0.png", "i1.png", "i2.png"]


# ---- exit codes ---------------------------------------------------------------------------------
def test_run_exit_codes(tmp_path, tiny_clip):
    good, _ = _folder(tmp_path / "good", {"a.png": _solid((200, 10, 10)), "b.png": _solid((10, 10, 200))})
    some, _ = _folder(tmp_path / "some", {"a.png": _solid((200, 10, 10)), "bad.png": b"\x89PNG broken"})
    none, desc = _folder(tmp_path / "none", {"bad.png": b"\x89PNG broken", "bad2.jpg": b"\xff\xd8 broken"})
    empty = tmp_path / "empty"
    empty.mkdir()
    d = str(desc)
    assert main(_run_args(good, tmp_path / "o1", tmp_path / "good" / "descriptions.csv", tiny_clip)) == 0
    assert main(_run_args(some, tmp_path / "o2", tmp_path / "some" / "descriptions.csv", tiny_clip)) == 1
    assert main(_run_args(none, tmp_path / "o3", d, tiny_clip)) == 2
    assert main(_run_args(empty, tmp_path / "o4", d, tiny_clip)) == 2
    assert main(["run", "--out", str(tmp_path / "o5")]) == 2  # bad usage: no images


def test_score_core_map_eval_and_eval_maps_exit_codes(tmp_path, tiny_clip, capsys):
    good, gdesc = _folder(tmp_path / "good", {"a.png": _solid((200, 10, 10)), "b.png": _solid((10, 10, 200)),
                                               "c.png": _solid((10, 200, 10))})
    some, sdesc = _folder(tmp_path / "some", {"a.png": _solid((200, 10, 10)), "bad.png": b"\x89PNG broken"})
    none, ndesc = _folder(tmp_path / "none", {"bad.png": b"\x89PNG broken"})

    def score(folder, out):
        return main(["score-core", "--model", "offline-image", "--images", str(folder), "--out", str(out), "--no-progress"])

    assert score(good, tmp_path / "s1.csv") == 0
    assert score(some, tmp_path / "s2.csv") == 1
    assert score(none, tmp_path / "s3.csv") == 2

    def mapped(folder, desc, out):
        return main(["map", "--images", str(folder), "--descriptions", str(desc), "--out", str(out),
                     "--progress", "false", *_clip(tiny_clip)])

    assert mapped(good, gdesc, tmp_path / "m1") == 0
    assert mapped(some, sdesc, tmp_path / "m2") == 1
    assert mapped(none, ndesc, tmp_path / "m3") == 2

    truth = tmp_path / "truth.csv"
    truth.write_text("filename,MOS_Rating\na.png,10\nb.png,50\nc.png,90\n")
    assert main(["eval", "--scores", str(tmp_path / "s1.csv"), "--truth", str(truth), "--out", str(tmp_path / "e1"),
                 "--n-boot", "50"]) == 0
    partial = tmp_path / "partial.csv"
    partial.write_text("filename,MOS_Rating\na.png,10\nb.png,50\n")
    rows = (tmp_path / "s1.csv").read_text() + "d.png,0.5,,,\n"
    (tmp_path / "s4.csv").write_text(rows)
    truth4 = tmp_path / "truth4.csv"
    truth4.write_text("filename,MOS_Rating\na.png,10\nb.png,50\nc.png,90\n")
    assert main(["eval", "--scores", str(tmp_path / "s4.csv"), "--truth", str(truth4), "--out", str(tmp_path / "e2"),
                 "--n-boot", "50"]) == 1  # d.png has no ground truth: listed
    assert main(["eval", "--scores", str(tmp_path / "s1.csv"), "--truth", str(partial), "--out", str(tmp_path / "e3")]) == 2

    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.pad(np.full((10, 10), 255, np.uint8), ((0, 38), (0, 54)))).save(masks / f"{name}.png")
    assert main(["eval-maps", "--maps", str(tmp_path / "m1"), "--masks", str(masks)]) == 1  # c.png has no mask
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(masks / "c.png")
    assert main(["eval-maps", "--maps", str(tmp_path / "m1"), "--masks", str(masks)]) == 0
    assert main(["eval-maps", "--maps", str(tmp_path / "m1"), "--masks", str(tmp_path / "none")]) == 2


# ---- no tracebacks ------------------------------------------------------------------------------
def test_out_that_is_a_file_gets_one_line(tmp_path):
    folder, desc = _folder(tmp_path, {"a.png": _solid((200, 10, 10))})
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = _cli(["run", str(folder), "--out", str(afile), "--describer", "none", "--descriptions", str(desc),
              "--dream", "false", "--progress", "false"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"error: --out {afile}: exists and is not a folder"]


def test_map_offline_with_defaults_falls_back_like_run(tmp_path):
    """No network: the default CLIP cannot be downloaded; `map` draws evidence maps (real weights), as `run`
    does, instead of minutes of retries and chained tracebacks."""
    folder, desc = _folder(tmp_path, {"a.png": _solid((200, 10, 10))})
    r = _cli(["map", "--images", str(folder), "--descriptions", str(desc), "--out", str(tmp_path / "maps"),
              "--progress", "false"])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    warnings = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING") and "evidence" in warnings[0].lower()
    assert "map source: evidence" in r.stdout and "placeholder" not in r.stdout.lower()
    maps = json.loads((tmp_path / "maps" / "summary.json").read_text())["maps"]
    assert maps["source"] == "evidence" and maps["placeholder"] is False


def test_a_full_disk_fails_images_not_the_process_and_leaves_no_truncated_file(tmp_path, tiny_clip):
    """Files may grow to 48 kB only (RLIMIT_FSIZE; a write past it fails like a full disk): maps cannot be
    written. One line, no traceback, no partial file under a real name; a rerun with room finishes."""
    import resource

    folder, desc = _folder(tmp_path, {f"n{k}.png": Image.fromarray(
        np.random.default_rng(k).integers(0, 255, (300, 400, 3), dtype=np.uint8)) for k in range(2)})
    out = tmp_path / "out"
    args = _run_args(folder, out, desc, tiny_clip)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (48_000, 48_000))

    r = _cli(args, preexec_fn=limit)
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    for npz in out.rglob("*.npz"):
        np.load(npz)["map"]  # every map file that exists is complete
    assert main(args) == 0  # room again: the failed images are redone
    assert all(r["status"] == "ok" for r in read_jsonl(out / "results.jsonl")[-2:])


# ---- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scores,expected", [
    ("image_name,score_z\na.png,1\nb.png,2\nc.png,3\n", "needs a filename or image column"),
    ("filename,score_z\na.png,1\na.png,2\nc.png,3\n", "row 2 (a.png): duplicate file name, first in row 1"),
    ("filename,score_z\na.png,1\nb.png,nan\nc.png,3\n", "row 2: score_z is 'nan'"),
    ("filename,score_z\na.png,1\nb.png,high\nc.png,3\n", "row 2: score_z is not a number ('high')"),
])
def test_eval_names_the_file_and_row(tmp_path, capsys, scores, expected):
    (tmp_path / "s.csv").write_text(scores)
    (tmp_path / "t.csv").write_text("filename,MOS_Rating\na.png,10\nb.png,50\nc.png,90\n")
    assert main(["eval", "--scores", str(tmp_path / "s.csv"), "--truth", str(tmp_path / "t.csv"),
                 "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "s.csv") in err and expected in err


def test_descriptions_files_are_validated(tmp_path, caplog):
    from realness.data import DataError, load_descriptions

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="(?s)empty.csv.*empty"):
        load_descriptions(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("filename,description\na.png,ok\nb.png,caf\xe9 sign\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"(?s)latin.csv.*line 3: not UTF-8"):
        load_descriptions(latin)
    dup = tmp_path / "dup.csv"
    dup.write_text('filename,description\na.png,"Yes, one."\nb.png,No.\na.png,"Yes, two."\n')
    with caplog.at_level(logging.WARNING):
        assert load_descriptions(dup)["a.png"] == "Yes, two."
    assert "dup.csv" in caplog.text and "a.png (rows 1 and 3)" in caplog.text


def test_skipped_non_image_files_are_counted_and_named(tmp_path, tiny_clip, capsys):
    folder, desc = _folder(tmp_path, {"a.png": _solid((200, 10, 10))})
    _solid((10, 10, 200)).save(folder / "photo.txt", format="JPEG")  # a JPEG with the wrong extension
    (folder / "notes.md").write_text("hello")
    assert main(_run_args(folder, tmp_path / "out", desc, tiny_clip, "--dream", "false")) == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["skipped_files"] == ["notes.md", "photo.txt"]
    assert "2 file(s) without an image extension left out: notes.md, photo.txt" in capsys.readouterr().out


# ---- bounded resources --------------------------------------------------------------------------
@pytest.mark.slow
def test_a_huge_description_and_a_large_image_stay_within_the_caps(tmp_path, tiny_clip):
    """A 100 kB description (thousands of claims) and a 28-megapixel image, through `run`, in a fresh
    process: peak RSS under 2 GiB and under 20 MB written for the image."""
    w, h = 6480, 4320
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    pixels = np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8)
    long_text = "Yes, " + " ".join(f"the object number {k} looks warped; the shadow {k} is wrong." for k in range(1700))
    assert len(long_text) > 100_000
    folder, desc = _folder(tmp_path, {"big.png": Image.fromarray(pixels)}, {"big.png": long_text})
    del pixels
    out = tmp_path / "out"
    # The child's own peak: VmHWM belongs to the memory map that exec made. Not ru_maxrss: it survives exec,
    # so a (v)forked child would start with the pytest process's RSS as its peak.
    code = ("import re, sys; from pathlib import Path; from realness.cli import main; rc = main(sys.argv[1:]); "
            "print('MAXRSS', re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)); "
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *_run_args(folder, out, desc, tiny_clip)], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    peak_kib = int(r.stdout.split("MAXRSS")[1].split()[0])
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"peak RSS {peak_kib / 1024:.0f} MiB")
    assert peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    assert written < 20_000_000, f"{written / 1e6:.1f} MB written"
    from realness.dream.maps import RealnessMap
    from realness.images import PIXEL_BUDGET

    rmap = RealnessMap.load(out / "maps" / "big.png.npz")
    assert max(rmap.map.shape) == 512 and len(rmap.phrases) == 16
    assert rmap.image_size[0] * rmap.image_size[1] <= PIXEL_BUDGET  # downscaled once, on read


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_images_over_the_pixel_budget_are_downscaled_once_on_read(tmp_path, fmt):
    from realness.images import load_image

    path = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 900, 3), dtype=np.uint8)).save(path, format=fmt)
    small = load_image(path, max_pixels=60_000)
    assert small.width * small.height <= 60_000 and small.width * small.height > 50_000
    assert abs(small.width / small.height - 1.5) < 0.02  # aspect kept
    assert load_image(path, max_pixels=None).size == (900, 600)


def test_maps_are_stored_at_working_size_and_upsampled_on_demand(tiny_clip):
    from realness.dream.configuration import DreamConfig
    from realness.dream.maps import DreamMapper

    mapper = DreamMapper(DreamConfig(**tiny_clip, map_long_side=100, max_phrases=2))
    rmap = mapper.map(_solid((200, 30, 30), (400, 300)), "Yes, the sky is flat; the hand is odd; the dog is big.")
    assert rmap.map.shape == (75, 100) and rmap.phrase_maps.shape == (2, 75, 100) and rmap.image_size == (400, 300)
    full = rmap.full_size()
    assert full.shape == (300, 400) and abs(float(full.mean()) - float(rmap.map.mean())) < 0.02
    assert rmap.overlay(_solid((0, 0, 0), (400, 300)), max_side=200).size == (200, 150)


@pytest.mark.slow
def test_describe_and_annotate_exit_codes(tmp_path, tiny_vlm):
    good, _ = _folder(tmp_path / "good", {"a.png": _solid((200, 10, 10))})
    some, _ = _folder(tmp_path / "some", {"a.png": _solid((200, 10, 10)), "bad.png": b"\x89PNG broken"})
    none, _ = _folder(tmp_path / "none", {"bad.png": b"\x89PNG broken"})
    for k, (folder, code) in enumerate([(good, 0), (some, 1), (none, 2)]):
        assert main(["describe", "--model", str(tiny_vlm), "--images", str(folder), "--out", str(tmp_path / f"d{k}.csv"),
                     "--max-new-tokens", "4"]) == code
        assert main(["annotate", "--engine", "transformers", "--model", str(tiny_vlm), "--images", str(folder),
                     "--out", str(tmp_path / f"a{k}.jsonl"), "--max_tokens", "4", "--progress", "false"]) == code
    assert main(["annotate", "--images", str(good), "--out", str(tmp_path / "x.jsonl")]) == 2  # no server, no engine


def test_a_glob_of_manifest_shards_is_one_input(tmp_path, tiny_clip):
    """Dataset-scale inputs come as shards: `realness run 'shards/part-*.csv'` reads them all, in order."""
    folder, desc = _folder(tmp_path / "data", {f"s{k}.png": _solid((30 * k, 20, 20)) for k in range(5)})
    shards = tmp_path / "shards"
    shards.mkdir()
    for part, names in enumerate([["s0.png", "s1.png"], ["s2.png", "s3.png", "s4.png"]]):
        (shards / f"part-{part}.csv").write_text("image,mos\n" + "".join(f"{folder / n},{10 * k}\n" for k, n in enumerate(names)))
    out = tmp_path / "run"
    assert main(_run_args(f"{shards}/part-*.csv", out, desc, tiny_clip)) == 0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [r["filename"] for r in rows] == [f"s{k}.png" for k in range(5)] and float(rows[3]["mos"]) == 10.0
    (shards / "part-9.csv").write_text(f"image\n{folder / 's0.png'}\n")  # the same image in two shards
    assert main(_run_args(f"{shards}/part-*.csv", tmp_path / "run2", desc, tiny_clip)) == 2
    assert main(_run_args(f"{tmp_path}/none-*.csv", tmp_path / "run3", desc, tiny_clip)) == 2
