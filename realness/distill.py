"""The distillation gate: is the open describer a good enough stand-in for GPT-4.1?

On images with human scores and reference (e.g. GPT-4.1) descriptions it compares
(a) CORE scored with the reference descriptions vs with the describer's: SROCC / PLCC of each against
    MOS and their ratio (describer / reference; 1.0 = no loss);
(b) text agreement: verdict accuracy (yes / no / somewhat), ROUGE-L F1 on lower-cased words, and mean
    cosine similarity under a sentence encoder (default: the offline all-MiniLM-L6-v2);
(c) cost: describer images/s and $ per 1,000 images on a GPU at a given hourly price, against an API's
    price per 1,000 images.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1: longest common word subsequence, harmonic mean of its precision and recall."""
    ref, cand = _words(reference), _words(candidate)
    if not ref or not cand:
        return 0.0
    prev = [0] * (len(cand) + 1)
    for r in ref:
        cur = [0]
        for j, c in enumerate(cand, 1):
            cur.append(prev[j - 1] + 1 if r == c else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(cand), lcs / len(ref)
    return 2 * p * r / (p + r)


def verdict_accuracy(references: Sequence[str], candidates: Sequence[str]) -> float:
    """Share of pairs whose Yes / No / Somewhat verdicts agree (a missing verdict never agrees)."""
    from describe.prompt import parse_verdict

    agree = [parse_verdict(r)[0] == parse_verdict(c)[0] != "" if c.strip() else False
             for r, c in zip(references, candidates)]
    return float(np.mean(agree)) if agree else float("nan")


def embedding_similarity(references: Sequence[str], candidates: Sequence[str], encoder: str | None = None,
                         batch_size: int = 32) -> float:
    """Mean cosine similarity of mean-pooled sentence embeddings (default encoder: offline MiniLM)."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    from realness.core.backbones import resolve_text_encoder
    from realness.core.configuration import OFFLINE_TEXT_ENCODER

    source = resolve_text_encoder(encoder or OFFLINE_TEXT_ENCODER)
    tok, model = AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()

    @torch.no_grad()
    def embed(texts):
        out = []
        for i in range(0, len(texts), batch_size):
            t = tok(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=128, return_tensors="pt")
            h = model(**t).last_hidden_state
            m = t["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(F.normalize((h * m).sum(1) / m.sum(1).clamp_min(1), dim=-1))
        return torch.cat(out)

    return float((embed(references) * embed(candidates)).sum(-1).mean())


def cost_per_1000(images_per_s: float, gpu_hour_price: float) -> float:
    """Dollars to describe 1,000 images at `images_per_s` on a machine costing `gpu_hour_price` per hour."""
    return 1000.0 / images_per_s / 3600.0 * gpu_hour_price


def core_agreement(pred_reference: Sequence[float], pred_candidate: Sequence[float], mos: Sequence[float]) -> dict:
    """SROCC / PLCC of CORE's scores with reference and with describer descriptions, and their ratios."""
    from realness.metrics import plcc, srocc

    ref = {"srocc": srocc(pred_reference, mos), "plcc": plcc(pred_reference, mos)}
    cand = {"srocc": srocc(pred_candidate, mos), "plcc": plcc(pred_candidate, mos)}
    return {"reference": ref, "describer": cand,
            "ratio": {k: cand[k] / ref[k] if ref[k] else float("nan") for k in ref}}


def evaluate_describer(images: str, truth: str, reference: str, candidate: str, core: str = "offline",
                       encoder: str | None = None, images_per_s: float | None = None,
                       gpu_hour_price: float = 2.0, api_price_per_1k: float | None = None,
                       out: str | None = None) -> dict:
    """`realness eval-describer`: the whole gate on the images that have MOS and both descriptions."""
    import json
    from pathlib import Path

    from realness.core import CoreModel
    from realness.data import load_descriptions
    from realness.evaluation import read_truth
    from realness.images import list_images
    from realness.scoring import score_images

    mos, ref, cand = read_truth(truth), load_descriptions(reference), load_descriptions(candidate)
    paths = [p for p in list_images(images) if p.name in mos and ref.get(p.name) and p.name in cand]
    if len(paths) < 3:
        raise ValueError(f"only {len(paths)} image(s) have a score and both descriptions")
    model = CoreModel.from_pretrained(core)
    score_ref = {r.filename: r.score_z for r in score_images(model, paths, ref, progress=False)}
    score_cand = {r.filename: r.score_z for r in score_images(model, paths, cand, progress=False)}
    names = [p.name for p in paths if score_ref[p.name] is not None and score_cand[p.name] is not None]
    refs, cands = [ref[n] for n in names], [cand[n] for n in names]
    report = {
        "n": len(names),
        "core": core_agreement([score_ref[n] for n in names], [score_cand[n] for n in names], [mos[n] for n in names]),
        "text": {"verdict_accuracy": verdict_accuracy(refs, cands),
                 "rouge_l": float(np.mean([rouge_l(r, c) for r, c in zip(refs, cands)])),
                 "embedding_similarity": embedding_similarity(refs, cands, encoder)},
    }
    if images_per_s:
        report["cost"] = {"images_per_s": images_per_s, "gpu_hour_price": gpu_hour_price,
                          "describer_per_1000": cost_per_1000(images_per_s, gpu_hour_price),
                          "api_per_1000": api_price_per_1k}
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "distill.json").write_text(json.dumps(report, indent=2))
    return report
