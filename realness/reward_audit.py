"""`realness reward-audit`: how far can the realness reward be pushed before it stops meaning anything?

Projected gradient ascent on the pixels of real photographs (L-infinity budget `epsilon`, step `step_size`, the
sign of the gradient, as in PGD) against the reward in each robustness setting, and at every step:

- `attacked`: the reward being ascended (that setting's), and `plain`: the bundled reward without options;
- `audit`: a second CORE whose gradient the attack never sees (`--audit_model`, default the bundled
  `offline-audit`: another backbone and other seeds), so a rise here is a change the two agree on;
- `psnr` and `ssim` of the change: how visible it is;
- at the start and the end, the artifact map's mean (`realness.dream.artifact`): whether the map sees the change.

A reward whose `attacked` climbs while `audit` stays flat is being gamed. Writes `audit.json`, `audit.csv`, a plot
of both rewards per step (`audit.png`) and the first image before and after with the change amplified (`grid.png`).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from realness.devices import resolve_device
from realness.dream.artifact import ArtifactMapModel
from realness.images import IMAGE_EXTENSIONS, load_image
from realness.reward import RealnessReward, as_batch, psnr

logger = logging.getLogger(__name__)

SETTINGS = {  # name -> RealnessReward options
    "plain": {},
    "min-head": {"aggregate": "min"},
    "eot": {"augment_views": 4},
    "min-head+eot": {"aggregate": "min", "augment_views": 4},
}


@dataclass
class AuditConfig:
    images: str = field(metadata={"help": "Folder of real photographs to attack (e.g. RAISE's r*.png).", "positional": True})
    out: str = field(default="reward-audit", metadata={"help": "Output folder: audit.json, audit.csv, audit.png, "
                                                               "grid.png."})
    model: str = field(default="offline-image", metadata={
        "flag": "core", "aliases": ("model",),
        "help": "The reward's CORE (bundled name or folder)."})
    audit_model: str = field(default="offline-audit", metadata={"help": "The CORE that only audits: never attacked."})
    settings: list[str] = field(default_factory=lambda: list(SETTINGS),
                                    metadata={"help": f"Robustness settings to attack, of {list(SETTINGS)}."})
    steps: int = field(default=10, metadata={"help": "Gradient-ascent steps."})
    epsilon: float = field(default=8 / 255, metadata={"help": "Largest change of any pixel (L-infinity budget, 0-1 "
                                                              "scale; the default is 8/255)."})
    step_size: float = field(default=1 / 255, metadata={"help": "Change per step along the sign of the gradient (0-1 "
                                                                "scale; the default is 1/255)."})
    max_images: int = field(default=6, metadata={"help": "Photographs attacked (the first, sorted by name)."})
    pattern: str = field(default="*", metadata={"help": "Which files of the folder (a glob, e.g. r*.png for RAISE's "
                                                        "real photos)."})
    long_side: int = field(default=512, metadata={"help": "Photographs are downscaled to this longer side first."})
    device: str = field(default="auto", metadata={"help": "Torch device: auto, cpu, cuda."})
    seed: int = field(default=0, metadata={"help": "Seed of the augmentations."})
    progress: bool = field(default=True, metadata={"help": "Print one line per setting as it finishes (each takes "
                                                           "about a minute per 4 photographs on 2 CPU cores)."})


def _load(cfg: AuditConfig) -> tuple[list[Path], torch.Tensor]:
    folder = Path(cfg.images)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images")
    paths = sorted(p for p in folder.glob(cfg.pattern) if p.suffix.lower() in IMAGE_EXTENSIONS)[: cfg.max_images]
    if not paths:
        raise ValueError(f"{folder}: no images match {cfg.pattern}")
    images = []
    for p in paths:
        image = load_image(p)
        image.thumbnail((cfg.long_side, cfg.long_side))
        images.append(image)
    size = min(im.size for im in images)  # one batch: every photograph cropped to the smallest
    return paths, torch.cat([as_batch([im.crop((0, 0, *size))]) for im in images])


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean structural similarity of two 3 x H x W images in [0, 1] (scikit-image's)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=2,
                                       data_range=1.0))


def _artifact_mean(model, images: torch.Tensor) -> float:
    from PIL import Image

    pil = [Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for im in images]
    with torch.no_grad():
        return float(np.mean([m.mean() for m in model.predict(pil)]))


def attack(reward, images: torch.Tensor, steps: int, epsilon: float, step_size: float, watch) -> list[dict]:
    """PGD ascent of `reward` from `images`; `watch(x)` gives the numbers recorded at each step."""
    x0 = images.detach()
    x = x0.clone()
    rows = [{"step": 0, **watch(x)}]
    for step in range(1, steps + 1):
        x.requires_grad_(True)
        value = reward(x)
        (grad,) = torch.autograd.grad(value.sum(), x)
        with torch.no_grad():
            x = (x + step_size * grad.sign()).clamp(x0 - epsilon, x0 + epsilon).clamp(0, 1)
        rows.append({"step": step, "attacked_during": float(value.detach().mean()), **watch(x)})
    rows[-1]["images"] = x
    return rows


def run_audit(cfg: AuditConfig) -> dict:
    """The audit of every setting; also written to `cfg.out`."""

    unknown = [s for s in cfg.settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; choose from {list(SETTINGS)}")
    if cfg.steps < 1 or cfg.epsilon <= 0 or cfg.step_size <= 0:
        raise ValueError("--steps must be at least 1, --epsilon and --step_size above 0")
    device = resolve_device(cfg.device)
    paths, images = _load(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    plain = RealnessReward(cfg.model, device=device)
    auditor = RealnessReward(cfg.audit_model, device=device)
    artifact = ArtifactMapModel.from_pretrained("offline/artifact-map", device=device)
    images = images.to(device)
    report = {"config": asdict(cfg), "images": [p.name for p in paths], "size": list(images.shape[-2:]), "settings": {}}
    start = time.perf_counter()
    for name in cfg.settings:
        reward = RealnessReward(cfg.model, device=device, seed=cfg.seed, **SETTINGS[name])

        def watch(x, reward=reward):
            with torch.no_grad():
                xs = x.detach()
                return {"attacked": float(reward(xs).mean()), "plain": float(plain(xs).mean()),
                        "audit": float(auditor(xs).mean()),
                        "psnr": float(np.mean([psnr(a.cpu(), b.cpu()) for a, b in zip(xs, images)])),
                        "ssim": float(np.mean([ssim(a.cpu(), b.cpu()) for a, b in zip(xs, images)]))}

        rows = attack(reward, images, cfg.steps, cfg.epsilon, cfg.step_size, watch)
        attacked = rows[-1].pop("images")
        first, last = rows[0], rows[-1]
        report["settings"][name] = {
            "options": SETTINGS[name], "steps": rows,
            "gain_attacked": last["attacked"] - first["attacked"], "gain_plain": last["plain"] - first["plain"],
            "gain_audit": last["audit"] - first["audit"],
            "artifact_mean_before": _artifact_mean(artifact, images.cpu()),
            "artifact_mean_after": _artifact_mean(artifact, attacked.cpu()),
        }
        if name == cfg.settings[0]:
            _grid(images[0].cpu(), attacked[0].cpu(), out / "grid.png", name)
        if cfg.progress:
            s = report["settings"][name]
            print(f"{name}: attacked {first['attacked']:+.2f} -> {last['attacked']:+.2f} z, audit {first['audit']:+.2f} -> "
                  f"{last['audit']:+.2f} z, PSNR {last['psnr']:.1f} dB, SSIM {last['ssim']:.3f}", file=sys.stderr)
    report["seconds"] = round(time.perf_counter() - start, 1)
    (out / "audit.json").write_text(json.dumps(report, indent=2))
    with (out / "audit.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["setting", "step", "attacked", "plain", "audit", "psnr", "ssim"])
        for name, s in report["settings"].items():
            for r in s["steps"]:
                w.writerow([name, r["step"], *(f"{r[k]:.4f}" for k in ("attacked", "plain", "audit", "psnr", "ssim"))])
    _plot(report, out / "audit.png")
    return report


def _grid(before: torch.Tensor, after: torch.Tensor, path: Path, name: str) -> None:
    from PIL import Image, ImageDraw

    diff = ((after - before) * 8 + 0.5).clamp(0, 1)  # the change, amplified 8x around mid-grey
    tiles = [(t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for t in (before, after, diff)]
    h, w = tiles[0].shape[:2]
    canvas = Image.new("RGB", (3 * w, h + 18), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (tile, label) in enumerate(zip(tiles, ["photograph", f"after ascent ({name})", "change x8"])):
        canvas.paste(Image.fromarray(tile), (i * w, 18))
        draw.text((i * w + 4, 3), label, fill="black")
    canvas.save(path)


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, s) in enumerate(report["settings"].items()):
        steps = [r["step"] for r in s["steps"]]
        colour = f"C{i}"
        ax.plot(steps, [r["attacked"] for r in s["steps"]], "-", color=colour, label=f"{name}: attacked reward")
        ax.plot(steps, [r["audit"] for r in s["steps"]], "--", color=colour, label=f"{name}: audit model")
    ax.set_xlabel("gradient-ascent step")
    ax.set_ylabel("realness z-score (mean over photographs)")
    eps = report["config"]["epsilon"] * 255
    ax.set_title(f"Pushing the reward on real photographs (L-inf budget {eps:.0f}/255)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
