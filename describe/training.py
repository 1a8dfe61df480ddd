"""Fine-tune an open VLM to write realness descriptions: LoRA or QLoRA, transformers Trainer, accelerate.

    accelerate launch training/train_describer.py --config training/configs/describer_raise.yaml

The Trainer brings checkpoints, resume, evaluation loss, mixed precision and DDP / DeepSpeed / FSDP
through accelerate's config; this module adds the data (sources mixed, held out by image), answer-only
labels, LoRA that vLLM can serve, and a few generated samples at every evaluation.

With `--regions.enabled`, stage 1 (detectors + artifact map, `describe.grounding.find_regions`) runs once
over the images first (kept in `--regions_file`, resumable), every prompt lists its image's regions with
zoomed crops (`describe.prompt`), and, with `--ground_targets`, the targets carry the boxes of the regions
their sentences name (`describe.grounding.ground_answer`). The adapter folder gets `regions.json`, so every
engine that loads it prompts the same way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from describe.chat import TrainCollator, generation_inputs
from describe.data import mix_sources, prefer_human_rows, split_by_image
from describe.grounding import GroundingStats, find_regions, ground_answer, target_aspects
from describe.modeling import LoraSettings, add_lora, load_base
from describe.prompt import DEFAULT_QUESTION, DEFAULT_SYSTEM, REGIONS_FILE, RegionPrompt
from describe.steering import AspectSteering, steers
from realness.argparsing import by_field_name
from realness.data import load_manifest, load_raise
from realness.dream.regions import Regions
from realness.images import load_image

logger = logging.getLogger(__name__)
# The LoRA options' names before the `lora` group, still read (flags and YAML) with a warning.
FLAT_LORA = {"r": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout", "language_modules": "lora_modules",
             "vision": "lora_vision"}


@dataclass
class DescriberTrainConfig:
    """Options of `training/train_describer.py` (and `realness train-describer`)."""

    data: str = field(metadata={"help": "RAISE-layout folder or a manifest (image, description, source) CSV/JSONL."})
    model_id: str = field(default="Qwen/Qwen2.5-VL-3B-Instruct", metadata={
        "flag": "describer", "aliases": ("model_id",),
        "help": "Base VLM (hub id or folder)."})
    output_dir: str = field(default="runs/describer", metadata={
        "flag": "out", "aliases": ("output_dir",),
        "help": "Checkpoints, adapter/, samples.jsonl."})
    descriptions: str | None = field(default=None, metadata={"help": "Descriptions file for a RAISE folder (default: "
                                                                     "its GPT-4.1 CSV)."})
    question: str = field(default=DEFAULT_QUESTION, metadata={"help": "The user prompt (default: the RAISE-TD "
                                                                      "question)."})
    system: str = field(default=DEFAULT_SYSTEM, metadata={"help": "System prompt ('' for none)."})
    quantize_4bit: bool = field(default=False, metadata={"help": "QLoRA: load the base in 4-bit NF4 (double quant, "
                                                                 "bf16 compute)."})
    dtype: str = field(default="auto", metadata={"help": "Base weights dtype: auto, bf16, fp16, fp32."})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={
        "flat_aliases": FLAT_LORA, "help": "The adapter (`LoraSettings`): --lora.r, --lora.alpha, --lora.dropout, "
                                          "--lora.language_modules, --lora.vision; YAML: a `lora:` mapping."})
    gradient_checkpointing: bool = field(default=True, metadata={"help": "Trade compute for memory."})
    image_max_pixels: int | None = field(default=None, metadata={"help": "Cap on image pixels (fewer image tokens, "
                                                                         "faster); default: the processor's."})
    epochs: float = field(default=3.0, metadata={"help": "Training epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: use epochs)."})
    batch_size: int = field(default=4, metadata={"help": "Per-device batch size."})
    grad_accum: int = field(default=4, metadata={"help": "Gradient accumulation steps."})
    lr: float = field(default=2e-4, metadata={"help": "Learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Linear warm-up share of the steps."})
    val_fraction: float = field(default=0.1, metadata={"help": "Share of images held out for evaluation (by image)."})
    weight_gpt: float = field(default=1.0, metadata={"help": "Sampling weight of GPT-written descriptions."})
    weight_human: float = field(default=1.0, metadata={"help": "Sampling weight of human descriptions."})
    prefer_human: bool = field(default=False, metadata={"help": "Drop an image's GPT description when a human one "
                                                                "exists."})
    eval_steps: int = field(default=50, metadata={"help": "Evaluate (loss + samples) every N steps."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps."})
    samples_per_eval: int = field(default=4, metadata={"help": "Held-out images described at each evaluation."})
    max_new_tokens: int = field(default=64, metadata={
        "flag": "max_tokens", "aliases": ("max_new_tokens",),
        "help": "Generation length for samples."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N steps."})
    seed: int = field(default=42, metadata={"help": "Random seed."})
    num_workers: int = field(default=2, metadata={"help": "Data loader workers."})
    report_to: str = field(default="none", metadata={"help": "none, tensorboard, wandb, ..."})
    resume: bool = field(default=True, metadata={"help": "Continue from the newest checkpoint in output_dir."})
    kbit_upcast: bool = field(default=False, metadata={"help": "With --quantize_4bit: PEFT's "
                                                               "prepare_model_for_kbit_training, which casts every "
                                                               "non-quantised weight (embeddings, norms, vision tower) "
                                                               "to float32; default keeps them in bf16."})
    answer_only_loss: bool = field(default=True, metadata={"help": "Compute logits only at the answer's positions (the "
                                                                   "labels), not over the whole vocabulary at every "
                                                                   "prompt position: the same loss, far less memory."})
    select_best: bool = field(default=False, metadata={"help": "Keep the checkpoint with the lowest held-out loss "
                                                               "(needs save_steps == eval_steps), not the last."})
    regions: RegionPrompt = field(default_factory=RegionPrompt, metadata={
        "help": "Stage-1 regions in the prompt and zoomed crops (`describe.prompt.RegionPrompt`): --regions.enabled, "
                "--regions.crops, ...; YAML: a `regions:` mapping."})
    regions_file: str | None = field(default=None, metadata={"help": "Stage-1 regions JSONL (written if missing, "
                                                                     "resumed if partial; default: "
                                                                     "<out>/regions.jsonl)."})
    ground_targets: bool = field(default=True, metadata={"help": "With regions: write the box of the region a target "
                                                                 "sentence names after its word "
                                                                 "(describe.grounding)."})

    @classmethod
    def from_flat(cls, **options) -> DescriberTrainConfig:
        """A config from options as they were before the `lora` group (`lora_r=`, `lora_alpha=`, ...); a
        nested `lora` mapping (the YAML files' form) is read too."""
        options = by_field_name(cls, options)
        nested = options.pop("lora", None) or {}
        if isinstance(nested, LoraSettings):
            nested = asdict(nested)
        if isinstance(options.get("regions"), dict):
            options["regions"] = RegionPrompt(**options["regions"])
        lora = {**nested, **{new: options.pop(old) for new, old in FLAT_LORA.items() if old in options}}
        if "language_modules" in lora:
            lora["language_modules"] = tuple(lora["language_modules"])
        cfg = cls(**options)
        return replace(cfg, lora=replace(cfg.lora, **lora)) if lora else cfg



class _Pairs(torch.utils.data.Dataset):
    """(image, answer[, regions]) examples; rows carry `regions` when stage 1 ran."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        return {"image": load_image(row["image"]), "answer": row["description"], "regions": row.get("regions")}


def attach_regions(cfg: DescriberTrainConfig, rows: list[dict]) -> GroundingStats | None:
    """With regions enabled: stage 1 over the rows' images (cached in `regions_file`), each row's `regions` (with
    `regions.aspects`, carrying the aspects its target discusses), and its target grounded (`ground_targets`);
    the grounding counts, written beside the checkpoints."""
    if not cfg.regions.enabled:
        return None
    cache = Path(cfg.regions_file or Path(cfg.output_dir) / "regions.jsonl")
    found = find_regions(sorted({r["image"] for r in rows}), cache)
    stats = GroundingStats()
    for r in rows:
        size, regions = found.get(Path(r["image"]).name, (None, []))
        # With aspects: what this target discusses (at inference, what stage 1's aspect tagger flags).
        r["regions"] = Regions(regions, target_aspects(r["description"])) if cfg.regions.aspects else regions
        if cfg.ground_targets and size is not None:
            r["description"], one = ground_answer(r["description"], regions, size, cfg.regions)
            stats.add(one)
    return stats


def load_rows(cfg: DescriberTrainConfig) -> list[dict]:
    """Describer rows from a RAISE folder or a manifest (scores are not needed)."""

    path = Path(cfg.data)
    ds = load_raise(path, descriptions=cfg.descriptions) if path.is_dir() else load_manifest(path, require_mos=False)
    return ds.to_list()


def prepare_data(cfg: DescriberTrainConfig, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train rows after preference and mixing, held-out rows), split by image first."""
    if cfg.prefer_human:
        rows = prefer_human_rows(rows)
    train, held = split_by_image(rows, cfg.val_fraction, cfg.seed)
    return mix_sources(train, {"gpt": cfg.weight_gpt, "human": cfg.weight_human}, cfg.seed), held


def set_image_budget(processor, max_pixels: int | None) -> None:
    """Cap the pixels (hence image tokens) per image for processors that support it (Qwen-VL family)."""
    if not max_pixels:
        return
    ip = processor.image_processor
    if hasattr(ip, "max_pixels"):
        ip.max_pixels = max_pixels
    size = getattr(ip, "size", None)
    if isinstance(size, dict) and "longest_edge" in size:
        size["longest_edge"] = max_pixels


def _sample_callback(cfg: DescriberTrainConfig, processor, held: list[dict]):
    from transformers import TrainerCallback

    path = Path(cfg.output_dir) / "samples.jsonl"

    class Samples(TrainerCallback):
        def on_evaluate(self, args, state, control, model=None, **kwargs):
            if not state.is_world_process_zero or not held or cfg.samples_per_eval <= 0:
                return
            rows = held[: cfg.samples_per_eval]
            texts = generate(model, processor, [load_image(r["image"]) for r in rows], cfg.question,
                             cfg.system or None, cfg.max_new_tokens, regions=[r.get("regions") for r in rows],
                             regions_cfg=cfg.regions)
            with path.open("a") as fh:
                for r, t in zip(rows, texts):
                    fh.write(json.dumps({"step": state.global_step, "image": Path(r["image"]).name,
                                         "reference": r["description"], "generated": t}) + "\n")
            logger.info("step %d sample: %s", state.global_step, texts[0])

    return Samples()


@torch.no_grad()
def generate(model, processor, images, question=DEFAULT_QUESTION, system=DEFAULT_SYSTEM, max_new_tokens=64,
             do_sample: bool = False, min_new_tokens: int = 0, prefixes=None, regions=None,
             regions_cfg: RegionPrompt | None = None) -> list[str]:
    """Greedy (default) descriptions for a batch of PIL images (`min_new_tokens` holds back the end token:
    benchmarks fix the output length with it). `prefixes`: each answer's given start, which the model
    continues; the returned text includes it. `regions` (a list per image) with an enabled `regions_cfg`:
    the region-aware prompt and crops; with its aspects line and `steer` > 0, `describe.steering.AspectSteering`
    holds each answer to its image's listed aspects."""
    was_training = model.training
    model.eval()
    inputs = generation_inputs(processor, images, question, system, prefixes, regions, regions_cfg)
    device = next(p for p in model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    extra = {}
    if regions is not None and steers(regions_cfg):
        from transformers import LogitsProcessorList

        aspects = [getattr(r, "aspects", None) for r in regions]
        extra["logits_processor"] = LogitsProcessorList([AspectSteering(processor.tokenizer, aspects, regions_cfg.steer)])
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
                         do_sample=do_sample, pad_token_id=processor.tokenizer.pad_token_id, **extra)
    model.train(was_training)
    texts = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return [p + t for p, t in zip(prefixes, texts)] if prefixes is not None else texts


def answer_only_loss(model, inputs: dict, num_items_in_batch=None):
    """`(loss, outputs)` with logits computed only where the next token is labelled (the answer), not over
    the ~150k-token vocabulary at every position of a prompt that is mostly image tokens. The same value as
    the model's own loss: cross-entropy over the labelled tokens, summed and divided by their count (or by
    `num_items_in_batch`, the Trainer's count across gradient-accumulation steps)."""
    import torch.nn.functional as F

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    keep = (labels[:, 1:] != -100).any(0).nonzero().squeeze(1)  # position t predicts token t + 1
    outputs = model(**inputs, logits_to_keep=keep)
    logits = outputs.logits.float()
    target = labels[:, keep + 1].to(logits.device)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                            reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (target != -100).sum()
    return total / count, outputs


def _answer_only_trainer():
    from transformers import Trainer

    class AnswerOnlyTrainer(Trainer):
        """The Trainer with `answer_only_loss`: logits at the answer's positions only."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss, outputs = answer_only_loss(model, inputs, num_items_in_batch)
            # normalised by the tokens of the whole accumulated batch when the Trainer counted them (as the
            # model's own loss is), else a per-batch mean that the Trainer divides by the accumulation steps
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size() if self.args.n_gpu <= 1
                               else self.args.n_gpu)  # the Trainer's own scaling for a count over devices
            return (loss, outputs) if return_outputs else loss

    return AnswerOnlyTrainer


def train_describer(cfg: DescriberTrainConfig, callbacks: tuple = ()) -> Path:
    """Fine-tune and save the adapter (+ processor) to `output_dir/adapter`; returns that folder.

    `callbacks`: extra `transformers.TrainerCallback`s (e.g. a benchmark's step clock)."""
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    rows = load_rows(cfg)
    stats = attach_regions(cfg, rows)
    if stats is not None:
        (out / "grounding.json").write_text(json.dumps(stats.to_dict(), indent=2) + "\n")
        logger.info("grounded targets: %s", stats.to_dict())
    train_rows, held = prepare_data(cfg, rows)
    # Which images were held out, so evaluations of this describer (and of a CORE for it) can stay off
    # the images it trained on.
    (out / "split.json").write_text(json.dumps({"train": sorted({Path(r["image"]).name for r in train_rows}),
                                                "held_out": sorted({Path(r["image"]).name for r in held})}, indent=1))
    model, processor = load_base(cfg.model_id, cfg.quantize_4bit, cfg.dtype)
    set_image_budget(processor, cfg.image_max_pixels)
    lora = cfg.lora
    model = add_lora(model, lora, cfg.gradient_checkpointing, cfg.kbit_upcast)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps, eval_strategy="steps" if held else "no", eval_steps=cfg.eval_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2, bf16=bf16, seed=cfg.seed,
        remove_unused_columns=False, dataloader_num_workers=cfg.num_workers, report_to=cfg.report_to,
        label_names=["labels"], disable_tqdm=False,
        load_best_model_at_end=bool(cfg.select_best and held), metric_for_best_model="eval_loss", greater_is_better=False,
    )
    collator = TrainCollator(processor, cfg.question, cfg.system or None, regions=cfg.regions)
    trainer = (_answer_only_trainer() if cfg.answer_only_loss else Trainer)(
                      model=model, args=args, train_dataset=_Pairs(train_rows),
                      eval_dataset=_Pairs(held) if held else None, data_collator=collator,
                      callbacks=[_sample_callback(cfg, processor, held), *callbacks])
    last = get_last_checkpoint(str(out)) if cfg.resume and out.is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    adapter = out / "adapter"
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(adapter)
        processor.save_pretrained(adapter)
        if cfg.regions.enabled:  # the prompt this adapter was trained with, for every engine that loads it
            (adapter / REGIONS_FILE).write_text(json.dumps(asdict(cfg.regions), indent=2) + "\n")
    return adapter
