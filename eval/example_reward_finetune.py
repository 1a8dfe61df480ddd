"""A worked example of realness as a training signal: fine-tune a small image generator with `RealnessLoss`.

    python eval/example_reward_finetune.py                     # 200 steps on CPU, a few minutes
    python eval/example_reward_finetune.py --steps 3 --pretrain-steps 20 --out /tmp/ex   # a smoke run

The generator is a tiny convolutional decoder built from its own code (no downloads): latent (16) -> 3 x 96 x 128.
Stage 1 fits it to the six sample photographs (`realness/samples/images`), one fixed latent each (MSE): a
generator of blurry photographs. Stage 2 fine-tunes it DRaFT-style, backpropagating the reward through the
generator, on jittered copies of those latents:

    loss = RealnessLoss(G(z)) + reg * mean((G(z) - G0(z))^2)        G0: the stage-1 generator, frozen

The regulariser keeps it near what it made before, as a KL term does in RLHF. Held-out latents (other jitter
seeds) measure the reward before and after, and the audit CORE (another backbone, never in the loss) says
whether the change is one it agrees with. Writes `example.json` and `grid.png` (held-out images before / after).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from realness.argparsing import parse_dataclasses

ROOT = Path(__file__).resolve().parent.parent
SIZE = (96, 128)  # H, W: RAISE's 3:4


class TinyDecoder(nn.Module):
    """latent -> 64 x 6 x 8 -> four upsampling conv blocks -> 3 x 96 x 128 in [0, 1]."""

    def __init__(self, latent: int = 16, width: int = 64):
        super().__init__()
        self.latent = latent
        self.fc = nn.Linear(latent, width * 6 * 8)
        blocks = []
        for _ in range(4):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1), nn.GELU()]
        self.body = nn.Sequential(*blocks)
        self.out = nn.Conv2d(width, 3, 3, padding=1)
        self.width = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, self.width, 6, 8)
        return torch.sigmoid(self.out(self.body(x)))


def photos() -> torch.Tensor:
    from realness.images import load_image
    from realness.reward import as_batch

    imgs = [load_image(p).resize((SIZE[1], SIZE[0])) for p in sorted((ROOT / "realness" / "samples" / "images").iterdir())]
    return as_batch(imgs)


def jittered(latents: torch.Tensor, seed: int, scale: float = 0.15) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return latents + scale * torch.randn(latents.shape, generator=g)


@dataclass
class ExampleRewardFinetuneConfig:
    """Options of `python eval/example_reward_finetune.py` (the same parser as every `realness` command)."""

    steps: int = field(default=200, metadata={"help": "Reward fine-tuning steps"})
    pretrain_steps: int = field(default=400, metadata={"help": "Steps fitting the six photographs first"})
    batch_size: int = field(default=2, metadata={"help": "Latents per fine-tuning step"})
    lr: float = field(default=2e-4, metadata={"default_help": "2e-4", "help": "Fine-tuning learning rate"})
    reg: float = field(default=20.0, metadata={"default_help": "20", "help": "Weight of the stay-close regulariser"})
    model: str = field(default="offline-image", metadata={"help": "The reward's CORE"})
    audit_model: str = field(default="offline-audit", metadata={"help": "The audit CORE, never in the loss"})
    seed: int = field(default=0, metadata={"help": "Seed"})
    out: str = field(default="eval/out/reward_example", metadata={"help": "Output folder"})


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([ExampleRewardFinetuneConfig], argv, prog="python eval/example_reward_finetune.py", description=__doc__)
    from realness.reward import RealnessLoss, RealnessReward

    torch.manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    target = photos()
    gen = TinyDecoder()
    latents = torch.randn(len(target), gen.latent, generator=torch.Generator().manual_seed(a.seed))
    start = time.perf_counter()
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3)
    for _ in range(a.pretrain_steps):  # stage 1: a generator of (blurry) photographs
        loss = F.mse_loss(gen(latents), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fit_mse = loss.item() if a.pretrain_steps else float("nan")
    base = copy.deepcopy(gen).eval().requires_grad_(False)
    reward = RealnessReward(a.model)
    audit = RealnessReward(a.audit_model)
    loss_fn = RealnessLoss(reward)
    held = torch.cat([jittered(latents, 1000 + k) for k in range(2)])  # held-out seeds: never trained on

    def measure(g) -> dict:
        with torch.no_grad():
            x = g(held)
            return {"reward": float(reward(x).mean()), "audit": float(audit(x).mean()),
                    "distance_to_start": float(((x - base(held)) ** 2).mean())}

    before = measure(gen)
    curve = []
    opt = torch.optim.Adam(gen.parameters(), lr=a.lr)
    for step in range(1, a.steps + 1):  # stage 2: the reward through the generator
        idx = torch.randint(0, len(latents), (a.batch_size,))
        z = jittered(latents[idx], step)
        x = gen(z)
        realness = loss_fn(x)
        keep = F.mse_loss(x, base(z))
        loss = realness + a.reg * keep
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append({"step": step, "train_reward": -realness.item(), "keep": keep.item()})
        if step % max(1, a.steps // 10) == 0:
            print(f"step {step}: train reward {-realness.item():+.3f} z, keep {keep.item():.4f}", file=sys.stderr)
    after = measure(gen)
    result = {"config": vars(a), "pretrain_mse": fit_mse, "held_out_before": before, "held_out_after": after,
              "reward_gain": after["reward"] - before["reward"], "audit_gain": after["audit"] - before["audit"],
              "curve": curve, "seconds": round(time.perf_counter() - start, 1)}
    (out / "example.json").write_text(json.dumps(result, indent=2))
    _grid(base(held[:4]), gen(held[:4]).detach(), out / "grid.png")
    print(f"held-out reward {before['reward']:+.3f} -> {after['reward']:+.3f} z; audit {before['audit']:+.3f} -> "
          f"{after['audit']:+.3f} z; wrote {out}/example.json, grid.png")
    return result


def _grid(before: torch.Tensor, after: torch.Tensor, path: Path) -> None:
    from PIL import Image, ImageDraw

    h, w = before.shape[-2:]
    canvas = Image.new("RGB", (len(before) * w, 2 * h + 36), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), "before reward fine-tuning (held-out latents)", fill="black")
    draw.text((4, h + 21), "after", fill="black")
    for row, batch in enumerate((before, after)):
        for i, im in enumerate(batch):
            tile = Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            canvas.paste(tile, (i * w, 18 + row * (h + 18)))
    canvas.save(path)


if __name__ == "__main__":
    main()
