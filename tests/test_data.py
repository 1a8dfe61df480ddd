import csv
import json

import numpy as np
import pytest
from PIL import Image

from realness.data import DataError, kfold, load_descriptions, load_manifest, load_raise, train_val_split


def _image(path, color=(120, 80, 40)):
    Image.new("RGB", (16, 12), color).save(path)


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def raise_dir(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("f1.png", "f2.png", "r1.png"):
        _image(tmp_path / "images" / name)
    _write_csv(tmp_path / "ratings.csv", ["filename", "MOS_Rating", "MOS_ZScore"],
               [["f1.png", 40.0, -0.5], ["f2.png", 70.0, 0.8], ["r1.png", 85.5, 1.2]])
    _write_csv(tmp_path / "descriptions_gpt41.csv", ["filename", "MOS", "description"],
               [["f1.png", -0.5, "Yes, the hand is distorted."], ["f2.png", 0.8, "Somewhat. Odd shadows."],
                ["r1.png", 1.2, "No, nothing looks unrealistic."]])
    return tmp_path


def test_load_raise_columns_and_values(raise_dir):
    ds = load_raise(raise_dir)
    assert ds.column_names == ["filename", "image", "mos", "description", "source", "split", "generator", "prompt"]
    assert ds["generator"] == ["", "", "real"]  # RAISE names its photographs r*
    assert ds["filename"] == ["f1.png", "f2.png", "r1.png"]
    assert ds["mos"] == [40.0, 70.0, 85.5]
    assert ds["source"] == ["gpt"] * 3
    assert ds[2]["description"].startswith("No")
    assert all(p.endswith(n) for p, n in zip(ds["image"], ds["filename"]))


def test_raise_problems_name_row_and_file(raise_dir):
    (raise_dir / "images" / "f2.png").unlink()
    _write_csv(raise_dir / "ratings.csv", ["filename", "MOS_Rating", "MOS_ZScore"],
               [["f1.png", "nan", 0], ["f2.png", 70, 0], ["r1.png", 85, 0], ["r1.png", 80, 0]])
    _write_csv(raise_dir / "descriptions_gpt41.csv", ["filename", "MOS", "description"],
               [["f1.png", 0, "Yes, odd."], ["f2.png", 0, "  "], ["r1.png", 0, "No."]])
    with pytest.raises(DataError) as info:
        load_raise(raise_dir)
    problems = info.value.problems
    assert "row 1 (f1.png): score is missing or not a number" in problems
    assert any(p.startswith("row 2 (f2.png): image not found") for p in problems)
    assert "row 2 (f2.png): empty description" in problems
    assert "row 4 (r1.png): duplicate file name, first seen in row 3" in problems
    assert len(problems) == 4
    assert str(raise_dir) in str(info.value)


def test_missing_column_is_named(raise_dir):
    _write_csv(raise_dir / "ratings.csv", ["filename", "score"], [["f1.png", 3]])
    with pytest.raises(DataError, match="missing column.*MOS_Rating"):
        load_raise(raise_dir)


def test_image_only_use_accepts_missing_descriptions(raise_dir):
    (raise_dir / "descriptions_gpt41.csv").unlink()
    ds = load_raise(raise_dir, require_description=False)
    assert ds["description"] == ["", "", ""]


def test_manifest_csv_and_jsonl_agree(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / name)
    rows = [{"image": "a.png", "mos": 10, "description": "Yes, warped.", "source": "human", "split": "train"},
            {"image": "b.png", "mos": 20, "description": "No.", "source": "gpt", "split": "val"},
            {"image": str(tmp_path / "c.png"), "mos": 30, "description": "Somewhat.", "source": "", "split": "train"}]
    _write_csv(tmp_path / "m.csv", list(rows[0]), [list(r.values()) for r in rows])
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    a, b = load_manifest(tmp_path / "m.csv"), load_manifest(tmp_path / "m.jsonl")
    assert a.to_list() == b.to_list()
    assert a["source"] == ["human", "gpt", ""] and a["split"] == ["train", "val", "train"]
    assert a["image"][2] == str(tmp_path / "c.png")


def test_manifest_errors(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "mos": 1, "description": "x"}\n{oops\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_manifest(tmp_path / "bad.jsonl")
    _write_csv(tmp_path / "src.csv", ["image", "mos", "description", "source"], [["a.png", 1, "x", "robot"]])
    with pytest.raises(DataError, match="row 1 \\(a.png\\): source must be one of gpt/human"):
        load_manifest(tmp_path / "src.csv")
    _write_csv(tmp_path / "nomos.csv", ["image", "description"], [["a.png", "x"]])
    with pytest.raises(DataError, match="missing column"):
        load_manifest(tmp_path / "nomos.csv")
    assert np.isnan(load_manifest(tmp_path / "nomos.csv", require_mos=False)["mos"][0])


def test_load_descriptions_by_filename_or_image(tmp_path):
    _write_csv(tmp_path / "d.csv", ["image", "description"], [["/x/y/a.png", "Yes, odd. "]])
    assert load_descriptions(tmp_path / "d.csv") == {"a.png": "Yes, odd."}


def test_kfold_is_a_deterministic_partition():
    folds = kfold(23, 5, seed=7)
    assert [f.index for f in folds] == list(range(5))
    vals = np.concatenate([f.val for f in folds])
    assert sorted(vals.tolist()) == list(range(23))  # every row validated exactly once
    for f in folds:
        assert not set(f.train) & set(f.val)
        assert len(f.train) + len(f.val) == 23
    again = kfold(23, 5, seed=7)
    assert all((a.val == b.val).all() for a, b in zip(folds, again))
    assert any((a.val != b.val).any() for a, b in zip(folds, kfold(23, 5, seed=8)))
    with pytest.raises(ValueError):
        kfold(3, 5)


def test_train_val_split():
    s = train_val_split(50, 0.2, seed=1)
    assert len(s.val) == 10 and len(s.train) == 40 and not set(s.train) & set(s.val)
    assert (s.val == train_val_split(50, 0.2, seed=1).val).all()
