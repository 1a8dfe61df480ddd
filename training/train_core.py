"""Train / cross-validate CORE with the paper's recipe.

One process (CPU or one GPU):
    accelerate launch training/train_core.py --config training/configs/core_raise.yaml

Several GPUs (data parallel; the batch size is per GPU):
    accelerate launch --config_file training/accelerate/multi_gpu.yaml training/train_core.py \
        --config training/configs/core_raise.yaml

Any flag overrides the YAML, e.g. `--model.mode text --seeds 1 2 3 --out runs/core-text`.
`python training/train_core.py --help` lists every flag with its default.
"""

from realness.argparsing import parse_dataclasses
from realness.core.training import CoreTrainConfig, train_core

if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    (config,) = parse_dataclasses([CoreTrainConfig], description=__doc__, prog="train_core.py")
    train_core(config)
