"""CORE's inputs prepared in DataLoader workers (`realness.core.loading`): the same scores as preparing them
in the calling process, with 0 and 2 workers, and a bad image that fails alone, with its name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from realness.core import CoreModel
from realness.data import load_descriptions
from realness.images import load_image

SAMPLES = Path(__file__).resolve().parent.parent / "realness" / "samples"


@pytest.fixture(scope="module")
def core():
    return CoreModel.from_pretrained("offline")


@pytest.fixture(scope="module")
def samples():
    paths = sorted((SAMPLES / "images").iterdir())
    texts = load_descriptions(SAMPLES / "descriptions.csv")
    return paths, [texts[p.name] for p in paths]


@torch.no_grad()
def _in_process(core, images, texts, batch_size):
    """What predict did before the DataLoader: the processor on each batch in this process, then the model."""
    core.eval()
    out = []
    for s in range(0, len(images), batch_size):
        out.append(core(**core.processor(images[s:s + batch_size], texts[s:s + batch_size])).float())
    return torch.cat(out)


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_scores_equal_the_in_process_scores(core, samples, workers):
    paths, texts = samples
    images = [load_image(p) for p in paths]
    reference = _in_process(core, images, texts, batch_size=2)
    from_files = core.predict(paths, texts, batch_size=2, num_workers=workers)  # decoded in the workers
    from_pil = core.predict(images, texts, batch_size=2, num_workers=workers)
    assert from_files.shape == (len(paths),)
    torch.testing.assert_close(from_files, reference, rtol=0, atol=0)
    torch.testing.assert_close(from_pil, reference, rtol=0, atol=0)


def test_a_bad_image_fails_alone_with_its_name(core, samples, tmp_path):
    from realness.scoring import score_images

    paths, texts = samples
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in paths:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    files = sorted(folder.iterdir())
    descriptions = dict(zip((p.name for p in paths), texts)) | {"broken.jpg": "Yes. It is broken."}
    expected = dict(zip((p.name for p in paths), core.predict(paths, texts, batch_size=2).tolist()))
    for workers in (0, 2):
        got = list(score_images(core, files, descriptions, batch_size=2, progress=False, num_workers=workers))
        assert [r.filename for r in got] == [p.name for p in files]  # input order, the bad one in its place
        bad = next(r for r in got if r.filename == "broken.jpg")
        assert bad.score_z is None and "broken.jpg" in bad.error
        for r in got:
            if r.filename != "broken.jpg":
                assert r.error == "" and r.score_z == pytest.approx(expected[r.filename], abs=1e-6)


def test_default_workers_follow_the_device_and_the_cpu_count():
    import os

    from realness.core.loading import default_num_workers

    cores = len(os.sched_getaffinity(0))
    assert default_num_workers("cuda") == max(0, min(8, cores - 1))
    assert default_num_workers("cpu") == 0  # the model's threads use every core already


def test_scoring_leaves_the_global_random_stream_alone(core, samples):
    """A DataLoader draws a seed when it starts; from torch's global generator that would shift a training
    run's random stream each time it scores its selection split."""
    paths, texts = samples
    state = torch.get_rng_state()
    core.predict(paths[:2], texts[:2], batch_size=2)
    assert torch.equal(state, torch.get_rng_state())
