"""Fine-tune the describer (LoRA / QLoRA on an open VLM) on RAISE-TD and/or your own descriptions.

One GPU:
    accelerate launch training/train_describer.py --config training/configs/describer_raise.yaml
Several GPUs (DDP):
    accelerate launch --config_file training/accelerate/multi_gpu.yaml training/train_describer.py \
        --config training/configs/describer_raise.yaml
DeepSpeed ZeRO-2 / FSDP: --config_file training/accelerate/deepspeed_zero2.yaml or fsdp.yaml.
QLoRA (4-bit NF4 base): add --quantize_4bit true.

Flags override the YAML; `python training/train_describer.py --help` lists them with defaults.
The adapter lands in OUTPUT_DIR/adapter (standard PEFT files that vLLM's --lora-modules loads).
"""

from describe.training import DescriberTrainConfig, train_describer
from realness.argparsing import parse_dataclasses

if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    (config,) = parse_dataclasses([DescriberTrainConfig], description=__doc__, prog="train_describer.py")
    print(train_describer(config))
