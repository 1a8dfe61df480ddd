"""Beyond RAISE: rated sets as data, inputs that keep each image's shape, the multi-set recipe and novelty."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from realness.core.configuration import CoreConfig
from realness.core.multiset import align_scores, fit_ridge
from realness.core.novelty import Novelty
from realness.core.processing import CoreProcessor, image_views, tensor_views
from realness.data import group_kfold, load_agiqa3k, load_rated, rated_folds

ROOT = Path(__file__).resolve().parents[1]


def _eval_module():
    spec = importlib.util.spec_from_file_location("eval_generalization", ROOT / "eval" / "eval_generalization.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def agiqa_dir(tmp_path):
    """An AGIQA-3K-shaped folder: data.csv with the real columns, images in ACGIQA-3K/ (spelled so)."""
    (tmp_path / "ACGIQA-3K").mkdir()
    header = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align", "mos"]
    rows = []
    for g, gen in enumerate(("AttnGAN_normal", "sd1.5_lowstep", "midjourney_normal")):
        for p in range(6):
            name = f"{gen}_{p:03d}.jpg"
            Image.new("RGB", (16, 16), (40 * g, 30 * p, 90)).save(tmp_path / "ACGIQA-3K" / name)
            q = 1.0 + g + 0.1 * p
            rows.append([name, f"prompt number {p}", "", "", "", q, 0.3, 2.0, 0.4, q])
    with (tmp_path / "data.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return tmp_path


def test_agiqa3k_table_is_read_with_its_columns(agiqa_dir, monkeypatch):
    ds = load_agiqa3k(agiqa_dir)
    assert ds.num_rows == 18
    assert ds[0]["filename"] == "AttnGAN_normal_000.jpg" and ds[0]["generator"] == "AttnGAN"
    assert ds[0]["prompt"] == "prompt number 0" and ds[0]["mos"] == pytest.approx(1.0)
    assert sorted(set(ds["generator"])) == ["AttnGAN", "Midjourney", "SD 1.5"]
    assert Path(ds[0]["image"]).is_file()
    monkeypatch.setenv("REALNESS_AGIQA3K_DIR", str(agiqa_dir))
    spec, again = load_rated("agiqa3k")
    assert spec.group_by == "prompt" and spec.mos_range == (0.0, 5.0) and again["mos"] == ds["mos"]
    monkeypatch.delenv("REALNESS_AGIQA3K_DIR")
    with pytest.raises(FileNotFoundError, match=r"REALNESS_AGIQA3K_DIR"):
        load_rated("agiqa3k")


def test_prompt_grouped_folds_never_share_a_prompt(agiqa_dir):
    spec, ds = load_rated(str(_manifest_of(agiqa_dir)))
    assert spec.group_by == "prompt"
    folds = rated_folds(spec, ds, k=3, seed=1)
    prompts = np.asarray(ds["prompt"])
    assert sorted(np.concatenate([f.val for f in folds]).tolist()) == list(range(ds.num_rows))
    for f in folds:
        assert not set(prompts[f.train]) & set(prompts[f.val])
    # a grouping that cannot be honoured (more folds than groups) is an error, not a silent leak
    with pytest.raises(ValueError, match="number of groups"):
        group_kfold(prompts, k=7)


def _manifest_of(agiqa_dir: Path) -> Path:
    """The AGIQA-shaped folder as a user manifest (filename, mos, generator, prompt)."""
    path = agiqa_dir / "manifest.csv"
    ds = load_agiqa3k(agiqa_dir)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "mos", "generator", "prompt"])
        for r in ds:
            w.writerow([f"ACGIQA-3K/{r['filename']}", r["mos"], r["generator"], r["prompt"]])
    return path


def _circle(size, box):
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).ellipse(box, fill="black")
    return img


def _extent(view) -> tuple[int, int]:
    dark = np.asarray(view.convert("L")) < 128
    ys, xs = np.nonzero(dark)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_a_square_image_keeps_its_shape():
    """A circle in a 1024x1024 image stays round in every view; the paper's resize squashes it."""
    img = _circle((1024, 1024), (312, 312, 712, 712))
    for how in ("crops", "native"):
        for view in image_views(img, how, (384, 384), 2):
            w, h = _extent(view)
            assert abs(w - h) <= 2, (how, w, h)
    w, h = _extent(image_views(img, "resize", (448, 597))[0])
    assert w / h > 1.25  # squashed to 4:3


def test_a_large_photo_is_not_squashed_and_stays_small():
    """A 4000x3000 photo: fixed-size views whatever its size, a circle still round, and the same views
    through the differentiable path the reward uses."""
    img = _circle((4000, 3000), (1800, 1300, 2200, 1700))
    config = CoreConfig(image_backbone="offline/efficientnet_lite0", mode="image", image_views="crops",
                        image_size=(384, 384), n_views=2)
    x = CoreProcessor(config).image_tensor(img)
    assert x.shape == (2, 3, 384, 384)
    views = image_views(img, "crops", (384, 384), 2)
    assert [v.size for v in views] == [(384, 384)] * 2
    w, h = _extent(image_views(img, "crops", (384, 384), 3)[1])  # the middle crop holds the circle
    assert abs(w - h) <= 2
    t = torch.from_numpy(np.asarray(img.resize((800, 600)), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    pil = image_views(img.resize((800, 600)), "crops", (384, 384), 2)
    tv = tensor_views(t, "crops", (384, 384), 2)
    assert tv.shape == (1, 2, 3, 384, 384)
    for k in range(2):  # the same window of the image in both paths
        ref = torch.from_numpy(np.asarray(pil[k], dtype=np.float32) / 255).permute(2, 0, 1)
        assert (tv[0, k] - ref).abs().mean() < 0.02


def test_views_reach_the_backbone_and_are_averaged(tiny_core_kwargs):
    from realness.core import create_core

    torch.manual_seed(0)
    kwargs = {**tiny_core_kwargs, "mode": "image", "image_size": (64, 64)}
    model = create_core("paper", pretrained=False, image_views="crops", n_views=2, **kwargs).eval()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8))
    left, right = img.crop((0, 0, 64, 64)), img.crop((64, 0, 128, 64))
    with torch.no_grad():
        both = model.predict_features([img])
        single = create_core("paper", pretrained=False, **kwargs).eval()
        single.load_state_dict(model.state_dict())
        parts = single.predict_features([left, right])
    torch.testing.assert_close(both[0], parts.mean(0), rtol=1e-4, atol=1e-4)


def _two_sets(seed=0, n=300, d=20):
    """Two rated sets sharing one quality direction `w`, on very different scales (0-100 and 0-5); the second
    set's images are better along `w` yet score lower numbers: only an alignment within each set sees that."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    xa, xb = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 2.0 * w
    sa, sb = xa @ w, xb @ w - 2.0
    mos_a = 50 + 20 * sa + rng.normal(0, 4, n)
    mos_b = 2.5 + 0.5 * sb + rng.normal(0, 0.1, n)
    sets = {"a": {"mos": mos_a, "groups": np.array([f"a{i // 2}" for i in range(n)]), "generator": np.array([""] * n)},
            "b": {"mos": mos_b, "groups": np.array([f"p{i % 60}" for i in range(n)]),
                  "generator": np.array([f"g{i % 4}" for i in range(n)])}}
    return {"a": xa, "b": xb}, sets


def test_protocol_learns_a_planted_signal_in_both_sets_and_a_broken_alignment_fails():
    ev = _eval_module()
    feats, sets = _two_sets()
    good = ev.evaluate(feats, sets, align="z", n_boot=0)
    for name in ("a", "b"):
        assert good["own_cv"][name]["srocc"] > 0.9
        assert good["both"][name]["srocc"] > 0.8
    assert good["cross"]["a->b"]["srocc"] > 0.9 and good["cross"]["b->a"]["srocc"] > 0.9
    assert good["logo"]["b"]["mean_srocc"] > 0.85 and set(good["logo"]["b"]["per_generator"]) == {"g0", "g1", "g2", "g3"}
    broken = ev.evaluate(feats, sets, align="none", n_boot=0)
    # raw scales pooled: the between-set contrast (b better along w, yet lower numbers) wins and inverts the ranking
    assert broken["both"]["a"]["srocc"] < 0.0 and broken["both"]["b"]["srocc"] < 0.0
    # the novelty measure fitted on one set tells the other set's images apart
    assert good["novelty"]["a"]["auroc_vs_b"] > 0.65


def test_alignment_and_ridge():
    z = align_scores([10, 20, 30, 1, 2, 3], ["a", "a", "a", "b", "b", "b"], "z")
    np.testing.assert_allclose(z[:3], z[3:])
    r = align_scores([10, 20, 30, 1, 2, 3], ["a", "a", "a", "b", "b", "b"], "rank")
    np.testing.assert_allclose(r[:3], r[3:])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * [1, 10, 100, 1, 1]
    y = x @ [1.0, 0.1, 0.0, 0.0, 0.0] + rng.normal(0, 0.05, 200)
    head = fit_ridge(x, y)
    assert np.corrcoef(head.predict(x), y)[0, 1] > 0.99


def test_novelty_is_low_in_distribution_and_high_when_shifted():
    rng = np.random.default_rng(0)
    train, held = rng.normal(size=(400, 32)), rng.normal(size=(100, 32))
    shifted = rng.normal(size=(100, 32)) + 3.0
    nov = Novelty.fit(train, components=16)
    inside, outside = nov(torch.as_tensor(held)).numpy(), nov(torch.as_tensor(shifted)).numpy()
    assert 25 < np.median(inside) < 80  # a typical training image's distance
    assert np.median(outside) >= 99 and np.mean(outside > nov.warn_at) > 0.95
    assert np.mean(inside > nov.warn_at) < 0.15


@pytest.mark.slow
def test_novelty_reaches_scores_csv_and_the_report(tmp_path):
    """A CORE fitted on smooth images by the multi-set recipe: a held-out smooth image scores with low novelty, a
    noise image with a warning, in score-core's CSV and in `realness run`'s scores.csv and report."""
    from realness.cli import main as cli
    from realness.core import CoreModel
    from realness.core.multiset import RatedRows, fit_on_sets

    rng = np.random.default_rng(0)
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir(), test.mkdir()
    paths = []
    for i in range(24):
        ramp = np.linspace(0, 1, 96)[None, :, None] * rng.uniform(60, 200, 3) + rng.uniform(0, 40, 3)
        img = np.broadcast_to(ramp, (96, 96, 3)).astype(np.uint8)
        path = (train if i < 22 else test) / f"smooth{i}.png"
        Image.fromarray(img).save(path)
        if i < 22:
            paths.append(str(path))
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(test / "noise.png")
    config = CoreConfig(image_backbone="offline/efficientnet_lite0", mode="image", image_views="crops",
                        image_size=(64, 64), n_views=1)
    mos = rng.uniform(0, 100, 22)
    core, report = fit_on_sets(config, [RatedRows("s", paths, mos, (0.0, 100.0))],
                               tmp_path / "cache", novelty_components=8, progress=False)
    assert core.config.novelty_rows == 22 and report["rows"] == {"s": 22}
    core.save_pretrained(tmp_path / "core", include_frozen=False)
    again = CoreModel.from_pretrained(tmp_path / "core")
    out = again.predict([str(test / "smooth22.png"), str(test / "noise.png")], with_novelty=True)
    assert out.shape == (2, 2) and out[0, 1] < 95 <= out[1, 1]
    assert cli(["score-core", "--core", str(tmp_path / "core"), "--images", str(test), "--out",
                str(tmp_path / "scores.csv"), "--no_progress"]) == 0
    rows = {r["filename"]: r for r in csv.DictReader((tmp_path / "scores.csv").open())}
    assert rows["noise.png"]["warning"].startswith("unlike the images") and float(rows["noise.png"]["novelty"]) >= 95
    assert rows["smooth22.png"]["warning"] == "" and float(rows["smooth22.png"]["novelty"]) < 95
    assert cli(["run", str(test), "--out", str(tmp_path / "run"), "--core", str(tmp_path / "core"),
                "--descriptions", str(_descriptions(tmp_path, test)), "--dream", "false", "--no_progress"]) == 0
    run_rows = {r["filename"]: r for r in csv.DictReader((tmp_path / "run" / "scores.csv").open())}
    assert run_rows["noise.png"]["warning"] and not run_rows["smooth22.png"]["warning"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "unlike the images CORE learned from" in html and "novelty (0-100)" in html


def _descriptions(tmp_path: Path, folder: Path) -> Path:
    path = tmp_path / "descriptions.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "description"])
        for p in sorted(folder.iterdir()):
            w.writerow([p.name, "No, nothing looks unreal."])
    return path


@pytest.mark.dataset
def test_bundled_offline_image_is_the_documented_recipe():
    """The bundled `offline-image` loads by name, is the recipe training/configs/core_multiset.yaml documents, and
    was fitted on RAISE's images read exactly as scoring reads them: each lies in its novelty bank (distance ~0)."""
    import yaml
    from conftest import RAISE_DIR

    from realness.core import CoreModel

    core = CoreModel.from_pretrained("offline-image")
    recipe = yaml.safe_load((ROOT / "training" / "configs" / "core_multiset.yaml").read_text())
    for key, value in recipe["model"].items():
        assert getattr(core.config, key) == (tuple(value) if isinstance(value, list) else value), key
    assert core.config.mode == "image" and core.config.head_hidden == 0 and core.config.mos_range == (0.0, 100.0)
    assert core.config.novelty_rows == 510 + 2982 and core.novelty is not None
    if not RAISE_DIR.is_dir():
        pytest.skip(f"RAISE not found at {RAISE_DIR}")
    paths = sorted((RAISE_DIR / "images").glob("*.png"))[:3]
    feats = core.predict_features(paths)
    distance = core.novelty.distance(feats)
    assert (distance < 0.05 * core.novelty.reference.float().median()).all(), distance
    z_and_novelty = core.predict(paths, with_novelty=True)
    assert (z_and_novelty[:, 1] <= 5).all()  # nearer than almost every training image is to the rest


def test_a_banner_stays_small():
    """A 10000x10 strip: the shape-keeping scale would make it 384,000 pixels long; it is squeezed to eight crops."""
    img = Image.new("RGB", (10000, 10), "gray")
    views = image_views(img, "crops", (384, 384), 2)
    assert [v.size for v in views] == [(384, 384)] * 2
    assert tensor_views(torch.rand(1, 3, 10, 10000), "crops", (384, 384), 2).shape == (1, 2, 3, 384, 384)


def test_the_clip_image_preset_builds_on_a_tiny_clip(tiny_clip, tmp_path):
    """`clip-image` (CLIP's image tower, the shape kept) for users with a network, built here on the tiny random CLIP:
    CLIP's normalisation, two crops per image, its embedding width, and a multi-set fit with novelty on top."""
    import open_clip

    from realness.core import create_core
    from realness.core.configuration import CLIP_MEAN, PRESETS
    from realness.core.multiset import RatedRows, fit_on_sets

    assert PRESETS["clip-image"]["image_backbone"] == "open_clip/ViT-B-32:openai"
    open_clip.add_model_config(tiny_clip["model_config_dir"])
    arch = f"open_clip/{tiny_clip['model']}:{tiny_clip['pretrained']}"  # a local weights file in place of a tag
    model = create_core("clip-image", pretrained=False, image_backbone=arch, image_size=(64, 64)).eval()
    assert model.config.image_mean == CLIP_MEAN and model.config.n_views == 2
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        path = tmp_path / f"c{i}.png"
        Image.fromarray(rng.integers(0, 255, (48, 96, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    assert model.predict_features(paths[:2]).shape == (2, 32)
    core, _ = fit_on_sets(model.config, [RatedRows("s", paths, rng.uniform(0, 5, 6), (0.0, 5.0))],
                          tmp_path / "cache", novelty_components=4, progress=False)
    assert core.predict(paths[:2], with_novelty=True).shape == (2, 2)
