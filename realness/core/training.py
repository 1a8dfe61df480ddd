"""Train and cross-validate CORE with `accelerate`: the paper's recipe, honest model selection, resume.

Recipe (the paper's): AdamW, lr 1.1e-4, batch 16, MSE on z-scored MOS, 384x512 input, flip / +-10 degree
rotation / colour-jitter augmentation, 15 epochs. What differs from the reference code: the epoch kept is
chosen on a *selection* split carved from the training rows, never on the rows it is reported on; every
(seed, fold) is reported and summarised as mean +- std.

Layout of `output_dir`:
    seed{S}/fold{F}/checkpoint/   accelerate state after the last finished epoch (resume point)
    seed{S}/fold{F}/best/         the selected CORE model (`CoreModel.from_pretrained`)
    seed{S}/fold{F}/predictions.csv, result.json
    metrics.jsonl                 one line per epoch and run
    summary.json, summary.csv, scatter.png
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from realness.argparsing import by_field_name
from realness.core.backbones import image_top
from realness.core.configuration import PRESETS, CoreConfig
from realness.core.ensemble import merge_cores
from realness.core.features import cached_features, cached_image_trunk, cached_text_hidden
from realness.core.losses import LOSSES, core_loss
from realness.core.modeling import CoreModel, join_features
from realness.data import Fold, kfold, load_manifest, load_raise, manifest_splits, train_val_split
from realness.evaluation import write_cv_report
from realness.images import ImageError, load_image
from realness.metrics import METRICS, correlations, srocc

logger = logging.getLogger(__name__)
MODEL_FIELDS = frozenset(f.name for f in fields(CoreConfig))
PRESET_DRIVEN = frozenset(("mode", "image_backbone", "text_encoder", "text_pooling"))  # None: the preset's


@dataclass
class CoreTrainConfig:
    """Options of `realness train-core` / `training/train_core.py`."""

    data: str = field(metadata={"help": "RAISE-layout folder (images/, ratings.csv, descriptions CSV) or a manifest "
                                        "CSV/JSONL."})
    descriptions: str | None = field(default=None, metadata={"help": "Descriptions file to use instead of the RAISE "
                                                                     "folder's GPT-4.1 one."})
    output_dir: str = field(default="runs/core", metadata={
        "flag": "out", "aliases": ("output_dir",),
        "help": "Where checkpoints, models and reports go."})
    preset: str = field(default="paper", metadata={"help": f"CORE preset: {', '.join(sorted(PRESETS))}."})
    model: CoreConfig | None = field(default=None, metadata={
        "prefix": "model", "flat_aliases": True, "defaults": lambda values: CoreConfig(**PRESETS.get(
            values.get("preset", "paper"), {})),
        "help": "The CORE model to train (`CoreConfig`), starting from --preset's; YAML: a `model:` mapping."})
    image_lr: float | None = field(default=None, metadata={"help": "Learning rate of the trained image stages; "
                                                                   "default: lr / 5."})
    text_lr: float | None = field(default=None, metadata={"help": "Learning rate of the text adapter; default: lr / 5."})
    pretrained: bool = field(default=True, metadata={"help": "Start from pretrained backbones (false: random init)."})
    pretrained_text: bool | None = field(default=None, metadata={"help": "Override --pretrained for the text encoder."})
    folds: int = field(default=5, metadata={"help": "k of k-fold cross-validation; 1 = one train/val split (the "
                                                    "manifest's split column if present); 0 = final fit on every row "
                                                    "(the epoch still chosen on the selection split; quality comes "
                                                    "from a CV run)."})
    only_folds: list[int] | None = field(default=None, metadata={"help": "Run only these fold indices."})
    seeds: list[int] = field(default_factory=lambda: [42], metadata={"help": "One run per seed per fold."})
    selection_fraction: float = field(default=0.1, metadata={"help": "Share of training rows held out to choose the "
                                                                     "best epoch."})
    epochs: int = field(default=15, metadata={"help": "Training epochs."})
    batch_size: int = field(default=16, metadata={"help": "Per-device batch size."})
    lr: float = field(default=1.1e-4, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    loss: str = field(default="mse", metadata={"help": "mse (on z-scored MOS, as the paper), mse+rank (plus a pairwise "
                                                       "ranking hinge) or mse+plcc (plus 1 - batch PLCC)."})
    rank_weight: float = field(default=1.0, metadata={"help": "Weight of the rank or PLCC term."})
    augment: bool = field(default=True, metadata={"help": "Flip, rotate and colour-jitter training images."})
    num_workers: int = field(default=2, metadata={"help": "Data loader worker processes."})
    mixed_precision: str | None = field(default=None, metadata={"help": "no, fp16 or bf16; default: accelerate's "
                                                                        "config."})
    resume: bool = field(default=True, metadata={"help": "Continue from the last checkpoint and skip finished runs."})
    tensorboard: bool = field(default=False, metadata={"help": "Also log to TensorBoard under output_dir/tb."})
    save_frozen: bool = field(default=True, metadata={"help": "Include frozen pretrained backbones in saved models."})
    save_dtype: str = field(default="float32", metadata={"help": "float32, or float16 to store saved models' weights "
                                                                 "at half the size (loaded back as float32)."})
    cache_features: bool = field(default=True, metadata={"help": "With every used backbone frozen and no augmentation, "
                                                                 "compute backbone features once and train only the "
                                                                 "head."})
    feature_cache: str | None = field(default=None, metadata={"help": "Folder for cached features; default: "
                                                                      "output_dir/feature_cache."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown CORE preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if self.model is None:
            self.model = CoreConfig(**PRESETS[self.preset])

    @classmethod
    def from_flat(cls, **options) -> CoreTrainConfig:
        """A config from options as they were before the `model` group (CoreConfig's fields beside the
        training ones, as older YAML files have them); a nested `model` mapping is read too."""
        options = by_field_name(cls, options)
        nested = options.pop("model", None) or {}
        if isinstance(nested, CoreConfig):
            nested = asdict(nested)
        model = {**nested, **{k: options.pop(k) for k in list(options) if k in MODEL_FIELDS}}
        return cls(**options).with_options(**model)

    def with_options(self, **options) -> CoreTrainConfig:
        """`dataclasses.replace` that also takes CoreConfig's fields (`mode=`, `image_size=`, ...) into `model`;
        a preset-driven field given as None keeps the preset's value."""
        model = {k: options.pop(k) for k in list(options) if k in MODEL_FIELDS}
        model = {k: v for k, v in model.items() if not (v is None and k in PRESET_DRIVEN)}
        cfg = replace(self, **options)
        return replace(cfg, model=replace(cfg.model, **model)) if model else cfg

    def model_overrides(self) -> dict:
        """The model's every field, for `create_core(self.preset, **overrides)` (which then gives `self.model`)."""
        return asdict(self.model)

class _Rows(Dataset):
    """(image, description, z-score) rows; images decoded in the workers."""

    def __init__(self, records: list[dict], z: np.ndarray, needs_image: bool):
        self.records, self.z, self.needs_image = records, z, needs_image

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        image = load_image(r["image"]) if self.needs_image else None
        return image, r["description"], float(self.z[i])


class EpochSampler(Sampler):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def load_training_data(cfg: CoreTrainConfig, needs_text: bool):
    """The dataset as a list of records plus the score range to clip predictions to."""
    path = Path(cfg.data)
    if path.is_dir():
        ds = load_raise(path, descriptions=cfg.descriptions, require_description=needs_text)
        score_range = (0.0, 100.0)
    else:
        ds = load_manifest(path, require_description=needs_text)
        score_range = None
    return ds.to_list(), score_range


def readable(records: list[dict], needs_image: bool) -> list[dict]:
    """Drop rows whose image cannot be decoded, logging one line per file (never silently)."""
    if not needs_image:
        return records
    keep = []
    for r in records:
        try:
            load_image(r["image"])
            keep.append(r)
        except ImageError as err:
            logger.warning("skipping unreadable image: %s", err)
    return keep


def _collate(processor, augment: bool):
    def collate(items):
        images, texts, z = zip(*items)
        batch = processor(list(images) if images[0] is not None else None, list(texts), augment=augment)
        batch["labels"] = torch.tensor(z, dtype=torch.float32)
        return batch

    return collate


def uses_cache(cfg: CoreTrainConfig, config) -> bool:
    """Whether training can run on cached backbone features (nothing upstream of the head changes)."""
    frozen = (not config.uses_image or config.freeze_image) and (not config.uses_text or config.freeze_text)
    return cfg.cache_features and frozen and not cfg.augment


def _inputs(core: CoreModel, rows: list[dict]) -> tuple[list | None, list[str]]:
    """The images (when the model reads them) and descriptions of `rows`, as `predict` takes them."""
    return ([load_image(r["image"]) for r in rows] if core.config.uses_image else None), [r["description"] for r in rows]


def _predict(core: CoreModel, records: list[dict], idx: np.ndarray, batch_size: int) -> np.ndarray:
    """Z-scores for rows `idx`, from their files."""
    return core.predict(*_inputs(core, [records[i] for i in idx]), batch_size=batch_size).numpy()


class _CachedTops(torch.nn.Module):
    """The head and whatever trains in the backbones, on cached inputs: the maps entering the image
    backbone's trained top stages (else its pooled features), the hidden states entering the text
    adapter's layers (else the pooled text features). With both backbones frozen that is the head alone
    on pooled features. Training costs those top parts alone; checkpoints hold only what trains and the
    head's buffers."""

    def __init__(self, core: CoreModel, image: torch.Tensor | None, text: torch.Tensor | None, mask: torch.Tensor | None):
        super().__init__()
        self.core, self.image, self.text, self.mask = core, image, text, mask

    @classmethod
    def from_cache(cls, core: CoreModel, records: list[dict], cache_dir, batch_size: int, progress: bool) -> _CachedTops:
        c, image, text, mask = core.config, None, None, None
        if c.uses_image:
            image = (cached_image_trunk(core, records, cache_dir, c.train_image_stages, batch_size, progress)
                     if c.image_stages_train else
                     cached_features(core, records, cache_dir, batch_size=batch_size, progress=progress, text=False))
        if c.text_lora:
            text, mask = cached_text_hidden(core, records, cache_dir, c.text_lora_layers, progress=progress)
        elif c.uses_text:
            text = cached_features(core, records, cache_dir, batch_size=batch_size, progress=progress, image=False)
        return cls(core, image, text, mask)

    def rebind(self, core: CoreModel) -> _CachedTops:
        """The same cached inputs read by another model (the selected one)."""
        return _CachedTops(core, self.image, self.text, self.mask)

    def collate(self, items) -> dict:
        out = self.inputs(torch.stack([i for i, _ in items]))
        out["labels"] = torch.stack([label for _, label in items])
        return out

    def inputs(self, idx: torch.Tensor) -> dict:
        out = {}
        if self.image is not None:
            out["image"] = self.image[idx]
        if self.text is not None and self.mask is not None:
            mask = self.mask[idx]
            length = int(mask.sum(1).max())  # padding beyond the batch's longest text is dead weight
            out.update(text=self.text[idx, :length], text_mask=mask[:, :length])
        elif self.text is not None:
            out["text"] = self.text[idx]
        return out

    def features(self, image=None, text=None, text_mask=None) -> torch.Tensor:
        c, device = self.core.config, next(self.core.head.parameters()).device
        if image is not None and c.image_stages_train:
            maps = image.to(device)
            views = maps.reshape(-1, *maps.shape[-3:])  # (B * V, C, H, W)
            image = image_top(self.core.image_backbone, views, c.train_image_stages).float()
            image = image.reshape(*maps.shape[:-3], -1)
        if text is not None and text_mask is not None:
            text = self.core.text_encoder.forward_top(text.to(device), text_mask.to(device), c.text_lora_layers).float()
        return join_features(None if image is None else image.to(device), None if text is None else text.to(device))

    def forward(self, image=None, text=None, text_mask=None) -> torch.Tensor:
        """(B, n_heads) z-scores."""
        return self.core.head_outputs(self.features(image, text, text_mask))

    @torch.no_grad()
    def _batches(self, idx, fn, batch_size: int = 64) -> torch.Tensor:
        was_training = self.core.training
        self.core.eval()
        idx = torch.as_tensor(np.asarray(idx))
        out = [fn(**self.inputs(idx[s:s + batch_size])).float().cpu() for s in range(0, len(idx), batch_size)]
        self.core.train(was_training)
        return torch.cat(out)

    def features_of(self, idx) -> torch.Tensor:
        return self._batches(idx, self.features)

    def score(self, idx) -> np.ndarray:
        return self._batches(idx, self.forward).mean(-1).numpy()

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        full = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        keep = {prefix + n for n, p in self.named_parameters() if p.requires_grad}
        keep |= {prefix + n for n, _ in self.core.head.named_buffers(prefix="core.head")}
        for k in [k for k in full if k.startswith(prefix) and k not in keep]:
            del full[k]
        return full

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Loads what `state_dict()` saves; only those keys count as missing (the frozen rest is not saved)."""
        from torch.nn.modules.module import _IncompatibleKeys

        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        saved = set(self.state_dict())
        missing = [k for k in result.missing_keys if k in saved]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"checkpoint does not match: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
        return _IncompatibleKeys(missing, result.unexpected_keys)


def _splits(cfg: CoreTrainConfig, records: list[dict]):
    n = len(records)
    if cfg.folds == 0:
        folds = [Fold(0, np.arange(n), np.arange(0))]
    elif cfg.folds >= 2:
        folds = kfold(n, cfg.folds, seed=0)  # folds fixed across seeds, so seeds vary only training
    elif any(r["split"] for r in records):
        import datasets

        folds = [manifest_splits(datasets.Dataset.from_list(records))]
    else:
        folds = [train_val_split(n, 0.2, seed=0)]
    wanted = cfg.only_folds
    return [f for f in folds if wanted is None or f.index in wanted]


def _latest_checkpoint(ckpt: Path) -> Path | None:
    """The last complete checkpoint: `checkpoint/`, or `checkpoint.old/` if a kill hit the swap."""
    for path in (ckpt, ckpt.with_name(ckpt.name + ".old")):
        if (path / "state.json").is_file():
            return path
    return None


def _save_checkpoint(accelerator, ckpt: Path, state: dict) -> None:
    """Write the accelerate state to a temporary folder, then swap it in, so a kill mid-save
    leaves the previous checkpoint usable. `state.json` is written last and marks completeness."""
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "state.json").write_text(json.dumps(state))
        shutil.rmtree(old, ignore_errors=True)
        if ckpt.exists():
            ckpt.rename(old)
        tmp.rename(ckpt)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _write_run_log(log: Path, seed: int, fold: int, history: list[dict]) -> None:
    """Make this run's lines in metrics.jsonl equal its checkpointed history (no duplicates after a kill)."""
    lines = log.read_text().splitlines() if log.is_file() else []
    keep = [l for l in lines if (json.loads(l)["seed"], json.loads(l)["fold"]) != (seed, fold)]
    tmp = log.with_name(log.name + ".tmp")
    tmp.write_text("".join(l + "\n" for l in keep + [json.dumps(e) for e in history]))
    tmp.replace(log)


def train_one(cfg: CoreTrainConfig, records: list[dict], fold, seed: int, score_range, accelerator, run_dir: Path) -> dict:
    """Train one (seed, fold) run, resumable; returns its held-out metrics."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    done = run_dir / "result.json"
    if cfg.resume and done.is_file():
        logger.info("%s already finished; skipping", run_dir)
        return json.loads(done.read_text())
    set_seed(seed)
    rng = np.random.default_rng(seed)
    train_idx = rng.permutation(fold.train)
    n_sel = max(2, int(round(len(train_idx) * cfg.selection_fraction)))
    sel_idx, fit_idx = np.sort(train_idx[:n_sel]), np.sort(train_idx[n_sel:])
    mos = np.array([r["mos"] for r in records], dtype=np.float64)
    mean, std = float(mos[fit_idx].mean()), float(mos[fit_idx].std()) or 1.0
    z = (mos - mean) / std

    model = CoreModel(replace(cfg.model, mos_mean=mean, mos_std=std, mos_range=score_range), pretrained=cfg.pretrained,
                      pretrained_text=cfg.pretrained_text)
    top = None
    cache_dir = cfg.feature_cache or Path(cfg.output_dir) / "feature_cache"
    if uses_cache(cfg, model.config):
        top = _CachedTops.from_cache(model, records, cache_dir, cfg.batch_size, cfg.progress and accelerator.is_main_process)
        fit_rows = torch.utils.data.TensorDataset(torch.as_tensor(fit_idx), torch.tensor(z[fit_idx], dtype=torch.float32))
        collate, workers = top.collate, 0
    else:
        fit_rows = _Rows([records[i] for i in fit_idx], z[fit_idx], model.config.uses_image)
        collate, workers = _collate(model.processor, cfg.augment), cfg.num_workers
    if model.config.standardize_features:
        model.head.set_feature_stats(top.features_of(fit_idx) if top is not None
                                     else model.predict_features(*_inputs(model, [records[i] for i in fit_idx]),
                                                                 batch_size=cfg.batch_size))
    sampler = EpochSampler(len(fit_rows), seed)
    loader = DataLoader(fit_rows, batch_size=cfg.batch_size, sampler=sampler, drop_last=len(fit_rows) > cfg.batch_size,
                        num_workers=workers, collate_fn=collate)
    # On cached inputs only the head (and any trained top stages or text adapter) is checkpointed:
    # 3.5 MB per epoch instead of every frozen backbone weight.
    trained = top if top is not None else model
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    adapter = [p for n, p in named if "lora_" in n]
    stages = [p for n, p in named if n.startswith("image_backbone.")] if model.config.image_stages_train else []
    groups = [{"params": [p for n, p in named if "lora_" not in n and not (stages and n.startswith("image_backbone."))]}]
    if adapter:
        groups.append({"params": adapter, "lr": cfg.text_lr if cfg.text_lr is not None else cfg.lr / 5})
    if stages:
        groups.append({"params": stages, "lr": cfg.image_lr if cfg.image_lr is not None else cfg.lr / 5})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    trained, optimizer, loader = accelerator.prepare(trained, optimizer, loader)
    ckpt = run_dir / "checkpoint"
    start_epoch, best, history = 0, {"score": -math.inf, "epoch": -1}, []
    resume_from = _latest_checkpoint(ckpt) if cfg.resume else None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        state = json.loads((resume_from / "state.json").read_text())
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        accelerator.print(f"resuming {run_dir} after epoch {state['epoch'] + 1}/{cfg.epochs}")

    log = (Path(cfg.output_dir) / "metrics.jsonl")
    for epoch in range(start_epoch, cfg.epochs):
        # Through the prepared loader: accelerate's own epoch counter (which restarts at 0 after a
        # resume) would otherwise overwrite the sampler's epoch and reshuffle differently.
        loader.set_epoch(epoch)
        trained.train()
        losses = []
        bar = tqdm(loader, desc=f"seed {seed} fold {fold.index} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and accelerator.is_main_process), leave=False)
        for batch in bar:
            labels = batch.pop("labels")
            with accelerator.autocast():
                pred = trained(**batch) if top is not None else trained(**batch, per_head=True)
            # each head on its own loss: side by side they train as independent runs would
            loss = sum(core_loss(p, labels, cfg.loss, cfg.rank_weight) for p in pred.float().unbind(-1))
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        sel_pred = top.score(sel_idx) if top is not None else _predict(model, records, sel_idx, cfg.batch_size * 2)
        sel_srocc = srocc(sel_pred, z[sel_idx]) if np.ptp(sel_pred) > 0 else math.nan
        score = sel_srocc if math.isfinite(sel_srocc) else -math.inf
        improved = score > best["score"]
        if improved and accelerator.is_main_process:
            best = {"score": score, "epoch": epoch}
            model.save_pretrained(run_dir / "best", include_frozen=cfg.save_frozen, dtype=_save_dtype(cfg))
        entry = {"seed": seed, "fold": fold.index, "epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                 "selection_srocc": sel_srocc, "best_epoch": best["epoch"] + 1}
        history.append(entry)
        _save_checkpoint(accelerator, ckpt, {"epoch": epoch, "best": best, "history": history})
        if accelerator.is_main_process:
            _write_run_log(log, seed, fold.index, history)
            if cfg.tensorboard:
                accelerator.log({f"seed{seed}/fold{fold.index}/{k}": v for k, v in entry.items()
                                 if k not in ("seed", "fold", "epoch")}, step=epoch + 1)
        accelerator.print(f"seed {seed} fold {fold.index} epoch {epoch + 1}: loss {entry['train_loss']:.4f} "
                          f"selection SROCC {sel_srocc:.4f}{' (best)' if improved else ''}")

    # Forget this run's model/optimizer/loader, or later runs would checkpoint (and restore) them too.
    accelerator.free_memory()
    result = {"seed": seed, "fold": fold.index, "best_epoch": best["epoch"] + 1, "n_val": len(fold.val),
              "selection_srocc": best["score"]}
    if len(fold.val) == 0:  # final fit: nothing held out to report on
        if accelerator.is_main_process:
            done.write_text(json.dumps(result, indent=2))
            _remove_checkpoints(ckpt)
        return result
    best_model = CoreModel.from_pretrained(run_dir / "best", device=accelerator.device)
    rows = [records[i] for i in fold.val]
    pred_z = (top.rebind(best_model).score(fold.val) if top is not None
              else _predict(best_model, records, fold.val, cfg.batch_size * 2))
    result.update({k: v for k, v in correlations(pred_z, z[fold.val]).items() if k != "n"})
    if accelerator.is_main_process:
        write_predictions(run_dir / "predictions.csv", rows, pred_z, best_model)
        done.write_text(json.dumps(result, indent=2))
        _remove_checkpoints(ckpt)
    return result


def write_predictions(path: Path, rows: list[dict], pred_z, model: CoreModel) -> None:
    """A run's held-out predictions: file name, MOS, predicted z-score and MOS on the model's scale."""
    import csv

    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "mos", "pred_z", "pred_mos"])
        for r, p in zip(rows, pred_z):
            w.writerow([r["filename"], r["mos"], f"{p:.6f}", f"{float(model.to_mos(float(p))):.4f}"])


def _remove_checkpoints(ckpt: Path) -> None:
    """A finished run's result.json is its resume point; its checkpoints are no longer needed."""
    for leftover in (ckpt, ckpt.with_name("checkpoint.old"), ckpt.with_name("checkpoint.tmp")):
        shutil.rmtree(leftover, ignore_errors=True)


def train_core(cfg: CoreTrainConfig) -> dict:
    """Run every (seed, fold), then write the summary table and the out-of-fold scatter plot."""
    from accelerate import Accelerator

    if cfg.save_dtype not in ("float32", "float16"):
        raise ValueError(f"--save_dtype must be float32 or float16, got {cfg.save_dtype!r}")
    if cfg.loss not in LOSSES:
        raise ValueError(f"--loss must be one of {LOSSES}, got {cfg.loss!r}")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per epoch is ours to print
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision,
                              log_with="tensorboard" if cfg.tensorboard else None, project_dir=str(out / "tb"))
    if cfg.tensorboard:
        accelerator.init_trackers("core")
    needs_text = cfg.model.mode != "image"
    needs_image = cfg.model.mode != "text"
    records, score_range = load_training_data(cfg, needs_text)
    records = readable(records, needs_image)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    results = []
    for seed in cfg.seeds:
        for fold in _splits(cfg, records):
            run_dir = out / f"seed{seed}" / f"fold{fold.index}"
            run_dir.mkdir(parents=True, exist_ok=True)
            results.append(train_one(cfg, records, fold, seed, score_range, accelerator, run_dir))
    if cfg.folds == 0:
        summary = {"runs": results, "n_runs": len(results)}
        finals = [out / f"seed{s}" / "fold0" / "best" for s in cfg.seeds]
        accelerator.print(f"final model(s): {', '.join(map(str, finals))}")
        if len(finals) > 1 and accelerator.is_main_process:
            _write_ensemble(finals, out / "ensemble", cfg.save_frozen, _save_dtype(cfg), accelerator)
    else:
        summary = write_cv_report(out, results) if accelerator.is_main_process else {}
    accelerator.end_training()
    return summary


def _save_dtype(cfg: CoreTrainConfig) -> torch.dtype | None:
    return None if cfg.save_dtype == "float32" else torch.float16


def _write_ensemble(finals: list[Path], folder: Path, include_frozen: bool, dtype, accelerator) -> None:
    """The final fits of several seeds as one model (`merge_cores`), when their heads read the same features."""

    try:
        merged = merge_cores([CoreModel.from_pretrained(p) for p in finals])
    except ValueError as err:  # e.g. each seed trained its own text adapter
        accelerator.print(f"no seed ensemble: {err}")
        return
    merged.save_pretrained(folder, include_frozen=include_frozen, dtype=dtype)
    accelerator.print(f"seed ensemble ({len(finals)} models, {merged.config.n_heads} heads): {folder}")


def ablate_modes(cfg: CoreTrainConfig, modes=("image", "text", "fusion")) -> dict:
    """Cross-validate image-only, text-only and fusion CORE with otherwise identical settings.

    Each mode trains under `output_dir/<mode>`; frozen-backbone features are shared through one cache.
    Writes `output_dir/ablation.json` and `ablation.md` (mean +- std over seeds x folds).
    """

    out = Path(cfg.output_dir)
    cache = cfg.feature_cache or str(out / "feature_cache")
    table = {}
    for mode in modes:
        report = train_core(cfg.with_options(mode=mode, output_dir=str(out / mode), feature_cache=cache))
        table[mode] = report["mean_std"] | {"n_runs": report["n_runs"]}
    (out / "ablation.json").write_text(json.dumps(table, indent=2))
    lines = ["| mode | " + " | ".join(METRICS) + " | runs |", "|---" * (len(METRICS) + 2) + "|"]
    for mode, stats in table.items():
        cells = [f"{stats[m]['mean']:.4f} ± {stats[m]['std']:.4f}" for m in METRICS]
        lines.append(f"| {mode} | " + " | ".join(cells) + f" | {stats['n_runs']} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return table
