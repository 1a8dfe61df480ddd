"""Train the artifact map (realness.dream.artifact) on real photographs with self-made local corruptions.

    REALNESS_RAISE_DIR=/path/to/raise-train accelerate launch training/train_artifact_map.py \
        --config training/configs/artifact_map.yaml

Any flag overrides the YAML, e.g. `--kinds blur noise color --steps 500 --out runs/am-small`.
`python training/train_artifact_map.py --help` lists every flag with its default; `realness train-maps` is
the same command.
"""

from realness.argparsing import parse_dataclasses
from realness.dream.artifact import ArtifactConfig
from realness.dream.artifact_training import ArtifactTrainConfig, train_artifact_map
from realness.dream.corruptions import CorruptionConfig

if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    train, model, corruption = parse_dataclasses([ArtifactTrainConfig, ArtifactConfig, CorruptionConfig],
                                                 description=__doc__, prog="train_artifact_map.py")
    print(train_artifact_map(train, model, corruption)["best"])
