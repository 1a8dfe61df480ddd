import csv

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("open_clip")

from realness.cli import main
from realness.dream import DreamConfig, DreamMapper, RealnessMap, parse_verdict, split_phrases

DESC = "Yes, the hat looks warped on the dog's head; the fur around the hat is blurry and the sky is odd."


def _image(seed=0, size=(80, 60)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _planted(corner=(8, 80), size=(96, 128)):
    """Grey image with a red block at rows 8..40, columns 80..120 (top right)."""
    img = np.full((*size, 3), 128, np.uint8)
    img[corner[0]:corner[0] + 32, corner[1]:corner[1] + 40] = (230, 30, 30)
    mask = np.zeros(size, bool)
    mask[corner[0]:corner[0] + 32, corner[1]:corner[1] + 40] = True
    return Image.fromarray(img), mask


@pytest.fixture(scope="module")
def dense(tiny_clip):
    return DreamMapper(DreamConfig(**tiny_clip, dense_long_side=96))


def test_verdicts_and_phrases():
    assert parse_verdict("Somewhat. The hands look merged.") == ("somewhat", "The hands look merged.")
    assert parse_verdict("no, nothing odd")[0] == "no"
    assert parse_verdict("The sky is odd.") == ("", "The sky is odd.")
    assert split_phrases(parse_verdict(DESC)[1]) == [
        "the hat looks warped on the dog's head", "the fur around the hat is blurry and the sky is odd"]
    with pytest.raises(ValueError, match="empty description"):
        parse_verdict("   ")


def test_shapes_range_determinism(dense):
    img = _image()
    a, b = dense.map(img, DESC), dense.map(img, DESC)
    assert a.map.shape == (60, 80) and a.map.dtype == np.float32
    assert a.map.min() == 0.0 and a.map.max() == pytest.approx(1.0)
    assert a.phrase_maps.shape == (2, 60, 80) and len(a.phrases) == 2
    assert a.raw_range[0] < a.raw_range[1] and a.verdict == "yes" and not a.flat
    assert np.array_equal(a.map, b.map)


def test_batch_equals_single_images(dense):
    images = [_image(0), _image(1), _image(2, size=(64, 64))]  # two sizes: grouped passes
    texts = [DESC, "Somewhat. The edges of the car look smeared.", DESC]
    batch = dense.map_batch(images, texts)
    for img, text, got in zip(images, texts, batch):
        np.testing.assert_allclose(got.map, dense.map(img, text).map, atol=1e-5)


def test_no_answer_is_flat_and_empty_is_an_error(dense):
    flat = dense.map(_image(), "No, nothing looks unrealistic in this photo.")
    assert flat.flat and flat.verdict == "no" and not flat.map.any() and flat.phrases == []
    with pytest.raises(ValueError, match="empty description"):
        dense.map(_image(), " \n")


def test_contrast_and_phrases_change_the_map(tiny_clip):
    img = _image()
    base = DreamMapper(DreamConfig(**tiny_clip, dense_long_side=96)).map(img, DESC)
    plain = DreamMapper(DreamConfig(**tiny_clip, dense_long_side=96, contrast=False, split_phrases=False)).map(img, DESC)
    assert plain.phrases == [parse_verdict(DESC)[1]]
    assert not np.allclose(base.map, plain.map)


def test_npz_and_png_round_trip(dense, tmp_path):
    img = _image()
    m = dense.map(img, DESC)
    loaded = RealnessMap.load(m.save(tmp_path / "m.npz"))
    assert np.array_equal(loaded.map, m.map) and np.array_equal(loaded.phrase_maps, m.phrase_maps)
    assert (loaded.phrases, loaded.verdict, loaded.flat) == (m.phrases, m.verdict, m.flat)
    assert loaded.raw_range == pytest.approx(m.raw_range)
    m.overlay(img, "hot", 0.5).save(tmp_path / "o.png")
    back = np.asarray(Image.open(tmp_path / "o.png")).astype(int)
    heat = np.asarray(m.heatmap("hot")).astype(int)
    expected = (np.asarray(img).astype(float) * 0.5 + heat * 0.5)
    assert back.shape == (60, 80, 3) and np.abs(back - expected).max() <= 1
    # The hottest pixel of the map is white-hot in the 'hot' colour map, the coldest black.
    y, x = np.unravel_index(m.map.argmax(), m.map.shape)
    assert heat[y, x].tolist() == [255, 255, 255]


@pytest.mark.parametrize("method,fix", [("dense", "clearclip"), ("dense", "maskclip"), ("dense", "none"), ("window", "none")])
def test_planted_patch_is_found_by_every_method(redness_clip, method, fix):
    """With the engineered CLIP, similarity to any text grows with redness: the map must peak on the
    red block, in every mode, and window and dense maps must agree."""
    from realness.dream.localization import pixel_auroc, pointing_game

    img, mask = _planted()
    cfg = DreamConfig(**redness_clip, method=method, dense_fix=fix, contrast=False, window=32, stride=8,
                      dense_long_side=128)
    m = DreamMapper(cfg).map(img, "Yes, the red block looks pasted in.")
    assert pointing_game(m.map, mask)
    assert pixel_auroc(m.map, mask) > 0.95
    assert m.map[mask].mean() > 0.7 > 0.2 > m.map[~mask].mean()


def test_window_and_dense_agree(redness_clip):
    img, mask = _planted(corner=(56, 8))  # bottom left this time
    kw = dict(**redness_clip, contrast=False, window=32, stride=8, dense_long_side=128)
    w = DreamMapper(DreamConfig(**kw, method="window")).map(img, "Yes, odd.").map
    d = DreamMapper(DreamConfig(**kw, method="dense")).map(img, "Yes, odd.").map
    assert np.corrcoef(w.ravel(), d.ravel())[0, 1] > 0.8


def test_map_and_eval_maps_cli(tiny_clip, redness_clip, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rows = []
    for i, corner in enumerate([(8, 80), (56, 8), (30, 40)]):
        img, mask = _planted(corner)
        img.save(images / f"p{i}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(masks / f"p{i}.png")
        rows.append([f"p{i}.png", "Yes, the red block looks pasted in."])
    _image().save(images / "real.png")
    rows.append(["real.png", "No, it looks like a normal photo."])
    (images / "broken.png").write_bytes(b"not a png")
    rows.append(["broken.png", "Yes, odd."])
    with (tmp_path / "d.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["filename", "description"], *rows])
    flags = [f"--{k}={v}" for k, v in redness_clip.items()]
    assert main(["map", "--images", str(images), "--descriptions", str(tmp_path / "d.csv"), "--out",
                 str(tmp_path / "maps"), "--contrast", "false", "--dense_long_side", "128", "--progress", "false",
                 *flags]) == 1  # some failed (broken.png)
    assert "mapped 3, flat ('No') 1, failed 1" in capsys.readouterr().out
    for i in range(3):
        for suffix in (".npz", "_heatmap.png", "_overlay.png"):
            assert (tmp_path / "maps" / f"p{i}.png{suffix}").is_file()
    assert RealnessMap.load(tmp_path / "maps" / "real.png.npz").flat
    # real.png has no mask: listed, and the exit code says some items could not be evaluated
    assert main(["eval-maps", "--maps", str(tmp_path / "maps"), "--masks", str(masks), "--out", str(tmp_path / "ev")]) == 1
    import json

    result = json.loads((tmp_path / "ev" / "localization.json").read_text())
    assert result["n"] == 3 and result["no_mask"] == ["real.png"]
    assert result["mean"]["pointing_hit"] == 1.0 and result["mean"]["auroc"] > 0.95
