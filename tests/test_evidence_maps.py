"""Evidence maps: corruptions, the artifact map (learning, save/load, the bundled head), real detectors,
phrase -> region grounding, and DREAM's evidence source end to end (`realness map`, `eval-maps` with floors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from realness.dream.corruptions import KINDS, CorruptionConfig, apply_corruption, corrupt, planted_set, region_alpha


def _photo(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth random colour field with some texture: a stand-in photograph."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.random((h, w, 3)), (6, 6, 0))
    base = (base - base.min()) / (base.max() - base.min())
    return np.clip(0.15 + 0.7 * base + 0.04 * rng.standard_normal((h, w, 3)), 0, 1).astype(np.float32)


# ---- corruptions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_each_corruption_changes_its_region_and_nothing_far_outside(kind):
    img, donor = _photo(0), _photo(1)
    rng = np.random.default_rng(3)
    alpha = region_alpha(*img.shape[:2], rng, 0.12, "ellipse")
    out, mask = apply_corruption(img, kind, alpha, rng, donor)
    assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert mask.any() and not (mask & (alpha <= 0.5)).any()  # labels only inside the region
    diff = np.abs(out - img).mean(-1)
    assert diff[mask].mean() > 5 / 255, kind
    assert diff[alpha == 0].max() == 0  # outside the soft region nothing moved


def test_corrupt_is_seeded_and_a_clean_draw_has_an_empty_mask():
    img = _photo(2)
    a = corrupt(img, np.random.default_rng(7), CorruptionConfig(clean_fraction=0, final_jpeg=0))
    b = corrupt(img, np.random.default_rng(7), CorruptionConfig(clean_fraction=0, final_jpeg=0))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2] and a[1].any()
    clean, mask, applied = corrupt(img, np.random.default_rng(7), CorruptionConfig(final_jpeg=0), clean=True)
    assert not mask.any() and applied == [] and np.array_equal(clean, img)
    with pytest.raises(ValueError, match="unknown corruption"):
        CorruptionConfig(kinds=("blur", "bogus"))


def test_planted_set_cycles_every_kind_and_writes_matching_masks(tmp_path):
    photos = [(f"p{i}", Image.fromarray((_photo(i) * 255).astype(np.uint8))) for i in range(4)]
    rows = planted_set(photos, tmp_path, per_image=3, seed=0)
    assert {r["kind"] for r in rows} == set(KINDS) and json.loads((tmp_path / "planted.json").read_text()) == rows
    for r in rows:
        image, mask = Image.open(tmp_path / "images" / r["image"]), Image.open(tmp_path / "masks" / r["image"])
        assert image.size == mask.size and np.asarray(mask).any()


# ---- the artifact map ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_artifact_head_learns_to_point_at_a_planted_corruption(tmp_path, capsys):
    """`realness train-maps` on synthetic photos with one planted kind: held-out AUROC and pointing far above
    chance (with the labels shifted by half the image the same run gives 0.40 / 0.08)."""
    from realness.cli import main
    from realness.dream.artifact import ArtifactMapModel

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        Image.fromarray((_photo(i) * 255).astype(np.uint8)).save(photos / f"p{i}.png")
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "am"
    assert main(["train-maps", "--photos", str(photos), "--out", str(out), "--steps", "80", "--batch_size", "8",
                 "--crop", "64", "--lr", "3e-3", "--eval_every", "80", "--num_workers", "0", "--val_fraction", "0.3",
                 "--val_per_image", "4", "--progress", "false", "--width", "16", "--hidden", "32", "--long_side", "128",
                 "--kinds", "color", "--min_area", "0.05", "--max_area", "0.15", "--max_regions", "1",
                 "--clean_fraction", "0", "--final_jpeg", "0"]) == 0
    assert "validation AUROC" in capsys.readouterr().out
    report = json.loads((out / "validation.json").read_text())
    assert len(report["split"]["train"]) == 7 and len(report["split"]["val"]) == 3  # split by file, the .txt left out
    assert not set(report["split"]["val_files"]) & set(report["split"]["train"])
    best = report["best"]
    assert best["auroc"] > 0.75 and best["pointing"] >= 0.5, best
    # the saved head loads and maps an image of the validation set
    model = ArtifactMapModel.from_pretrained(out)
    assert model.config.width == 16
    first = json.loads((out / "validation-set" / "planted.json").read_text())[0]["image"]
    image = Image.open(out / "validation-set" / "images" / first)
    (prob,) = model.predict([image], sizes=[image.size])
    assert prob.shape == (image.height, image.width) and 0 <= prob.min() <= prob.max() <= 1


def test_bundled_artifact_map_round_trips_and_stays_small(tmp_path):
    from realness.dream.artifact import BUNDLED, ArtifactMapModel

    folder = BUNDLED["offline/artifact-map"]
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 3 * 2 ** 20, f"the shipped head is {size / 2 ** 20:.1f} MB"
    model = ArtifactMapModel.from_pretrained("offline/artifact-map")
    image = Image.fromarray((_photo(5, 192, 256) * 255).astype(np.uint8))
    (a,) = model.predict([image])
    model.save_pretrained(tmp_path / "copy")
    (b,) = ArtifactMapModel.from_pretrained(tmp_path / "copy").predict([image])
    np.testing.assert_allclose(a, b, atol=2e-3)  # float16 on disk
    assert a.shape == (192, 256)
    with pytest.raises(FileNotFoundError, match="bundled"):
        ArtifactMapModel.from_pretrained(tmp_path / "nothing-here")


def test_bundled_artifact_map_finds_planted_edits_on_photos_it_never_saw(tmp_path):
    """scikit-image's photographs were never trained on: planted edits of every kind are found well above the
    centre prior (pixel AUROC) on average."""
    from realness.dream.artifact import ArtifactMapModel
    from realness.dream.baselines import centre_prior
    from realness.dream.corruptions import packaged_photos
    from realness.dream.localization import pixel_auroc

    photos = sorted(packaged_photos().items())[:4]
    rows = planted_set(photos, tmp_path, per_image=3, seed=11)
    model = ArtifactMapModel.from_pretrained("offline/artifact-map")
    ours, centre = [], []
    for r in rows:
        image = Image.open(tmp_path / "images" / r["image"])
        mask = np.asarray(Image.open(tmp_path / "masks" / r["image"])) > 127
        (prob,) = model.predict([image], sizes=[image.size])
        ours.append(pixel_auroc(prob, mask))
        centre.append(pixel_auroc(centre_prior(mask.shape), mask))
    assert np.mean(ours) > 0.8 and np.mean(ours) > np.mean(centre) + 0.1, (np.mean(ours), np.mean(centre))


# ---- detectors ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detector():
    from realness.dream.regions import RegionDetector

    return RegionDetector()


def _text_image() -> Image.Image:
    im = Image.new("RGB", (512, 384), (235, 235, 228))
    ImageDraw.Draw(im).text((40, 150), "OPEN DAILY 9-5", fill=(20, 20, 20), font=ImageFont.load_default(size=48))
    return im


def test_detectors_find_the_astronauts_face_text_and_nothing_on_a_flat_image(detector):
    from skimage import data

    found = detector.detect(Image.fromarray(data.astronaut()))
    faces = [r for r in found if r.label == "face"]
    assert len(faces) == 1 and faces[0].score > 0.95
    x0, y0, x1, y1 = faces[0].box  # the face is at about x 175-265, y 60-175 of the 512 x 512 image
    assert 150 < x0 < 200 and 240 < x1 < 290 and 40 < y0 < 90 and 150 < y1 < 200 and len(faces[0].landmarks) == 5
    assert any(r.label == "person" for r in found)
    texts = [r for r in detector.detect(_text_image()) if r.label == "text"]
    assert len(texts) == 1 and "OPEN" in texts[0].text.upper()
    x0, y0, x1, y1 = texts[0].box
    assert x0 < 60 and x1 > 300 and y0 < 175 < y1
    assert detector.detect(Image.new("RGB", (512, 384), (128, 128, 128))) == []


def test_a_large_image_gets_boxes_in_its_own_pixels(detector):
    big = _text_image().resize((2048, 1536))
    (text,) = [r for r in detector.detect(big) if r.label == "text"]
    assert text.box[0] < 240 and text.box[2] > 1200  # 4x the 512-px boxes
    assert text.normalised(big.size)[2] > 580


# ---- grounding -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("claim,labels", [
    ("the face is distorted and the eyes are uneven", ["face"]),
    ("the fingers of the left hand are fused", ["hand"]),
    ("the woman's arm bends at an impossible angle", ["person"]),
    ("the sign's letters are garbled", ["text"]),
    ("the skin looks waxy", ["face", "person"]),
    ("the lighting on the hills is inconsistent", []),
    ("the handle of the cup is warped", []),  # "handle" is not "hand"
    ("a man holds a sign with his hands", ["hand", "person", "text"]),
])
def test_claims_name_the_regions_of_their_words(claim, labels):
    from realness.dream.evidence import named_labels

    assert named_labels(claim) == labels


def test_grounding_uses_detected_regions_and_falls_back_when_none_of_that_kind():
    from realness.dream.evidence import ground_claim
    from realness.dream.regions import Region

    face = Region("face", (10, 10, 50, 50), 0.99, "mtcnn")
    text = Region("text", (60, 60, 90, 70), 0.9, "rapidocr", text="EXIT")
    assert ground_claim("the eyes look glassy", [face, text]) == (["face"], [face])
    assert ground_claim("the hands have six fingers", [face, text]) == (["hand"], [])  # named, none found
    assert ground_claim("the sky is banded", [face, text]) == ([], [])


def test_a_grounded_claim_peaks_inside_its_box_and_no_shows_where_the_model_looks(detector):
    from skimage import data

    from realness.dream import DreamConfig
    from realness.dream.evidence import NO_CLAIM_NOTE, EvidenceMapper

    mapper = EvidenceMapper(DreamConfig(source="evidence"), detector=detector)
    image = Image.fromarray(data.astronaut())
    m = mapper.map(image, "Yes, the face looks waxy and the eyes are misaligned.")
    (face,) = [r for r in m.regions if r["label"] == "face"]
    y, x = np.unravel_index(int(np.argmax(m.map)), m.map.shape)
    x0, y0, x1, y1 = face["box"]
    assert x0 <= x <= x1 and y0 <= y <= y1 and m.grounding[0]["names"] == ["face"]
    ungrounded = mapper.map(image, "Somewhat. The lighting on the wall is flat.")
    assert np.corrcoef(ungrounded.map.ravel(), ungrounded.artifact.astype(np.float32).ravel())[0, 1] > 0.99
    no = mapper.map(image, "No, it looks like a real photograph.")
    assert no.note == NO_CLAIM_NOTE and not no.flat and no.map.max() == 1.0 and no.phrases == []


def test_map_and_eval_maps_with_evidence_and_floors(tmp_path, capsys):
    from realness.cli import main

    photos = [(f"p{i}", Image.fromarray((_photo(i, 192, 256) * 255).astype(np.uint8))) for i in range(3)]
    rows = planted_set(photos, tmp_path / "planted", per_image=2, seed=4)
    desc = tmp_path / "d.csv"
    desc.write_text("filename,description\n" + "".join(f'{r["image"]},"Yes, something looks edited."\n' for r in rows))
    assert main(["map", "--images", str(tmp_path / "planted" / "images"), "--descriptions", str(desc), "--out",
                 str(tmp_path / "maps"), "--source", "evidence", "--progress", "false"]) == 0
    assert "map source: evidence" in capsys.readouterr().out
    assert main(["eval-maps", "--maps", str(tmp_path / "maps"), "--masks", str(tmp_path / "planted" / "masks"),
                 "--images", str(tmp_path / "planted" / "images"), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "floor centre" in out and "floor texture" in out and "floor boxes" in out
    r = json.loads((tmp_path / "ev" / "localization.json").read_text())
    assert r["n"] == len(rows) and set(r["floors"]) == {"centre", "random", "texture", "boxes"}
    assert all(f["n"] == len(rows) for f in r["floors"].values())
    assert abs(r["floors"]["random"]["mean"]["auroc"] - 0.5) < 0.2
