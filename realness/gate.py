"""The distillation gate: is the open describer a good enough stand-in for GPT-4.1, and worth running at all?

On images with human scores and reference (e.g. GPT-4.1) descriptions, with one CORE model:

(a) **Scores.** CORE's SROCC / PLCC against MOS when it reads the reference descriptions, the candidate's,
    and floors a describer must clear to be worth running for the score:
    - *constant*: one fixed neutral sentence for every image (content-free);
    - *shuffled*: the reference descriptions given to the wrong images (a seeded derangement);
    - *retrieval* (with training images and their descriptions): each image gets the reference
      description of its nearest training image under CORE's frozen image encoder;
    - *image-only*: an image-only CORE head (bundled `offline-image`): the score with no describer at all.
    "Text value retained" = (candidate - best floor) / (reference - best floor), on SROCC: 1 means the
    candidate's text adds as much over the floors as the reference's, 0 nothing, below 0 it does harm.
(b) **Verdicts.** Agreement with the reference's Yes / No / Somewhat, the majority-class baseline,
    quadratic-weighted Cohen's kappa (the verdicts are ordinal: no < somewhat < yes), the 3x3 confusion
    matrix, the share of candidates with no parseable verdict.
(c) **Text.** ROUGE-L F1 (the `rouge-score` reference implementation, with stemming) and the mean cosine
    similarity under a sentence encoder (default: the offline all-MiniLM-L6-v2).
(d) **Intervals.** A paired bootstrap over images (the same resamples for every row) of the SROCC ratio
    candidate / reference and of candidate minus each floor.
(e) **Verdict.** `passed` with reasons: the candidate's SROCC above every floor and its kappa above
    `min_kappa`. `realness eval-describer` exits 0 on a pass, 1 on a fail, 2 on bad input.
(f) **Cost** per 1,000 images at a measured throughput and hourly price, next to an API's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realness.answers import verdict_report
from realness.boxes import find_boxes, strip_boxes
from realness.core import CoreModel
from realness.core.backbones import resolve_text_encoder
from realness.core.configuration import OFFLINE_TEXT_ENCODER
from realness.data import load_descriptions
from realness.dream.regions import labels_found
from realness.evaluation import read_truth
from realness.files import sha256_file, write_text_atomic
from realness.images import list_images, load_image
from realness.mentions import discussed, hallucination_report, mention_report
from realness.metrics import plcc, srocc
from realness.scoring import score_images

GATE_FILE = "gate.json"  # written by eval-describer, read by `run --core auto` (describe.engines.describer_gate)
FLOOR_WORDS = {"constant": "with a constant sentence", "shuffled": "with shuffled texts",
               "retrieval": "with the nearest training image's text", "image_only": "with no text (image-only CORE)"}
CONSTANT = "Somewhat. Some details of the image look slightly unnatural."
IMAGE_ONLY_CORE = "offline-image"


@dataclass
class GateConfig:
    """Options of `realness eval-describer`."""

    images: str = field(metadata={"help": "Folder of the labelled images."})
    truth: str = field(metadata={"help": "Human scores: RAISE ratings.csv or a manifest with image,mos."})
    reference: str = field(metadata={"help": "Reference descriptions CSV/JSONL, e.g. GPT-4.1's."})
    candidate: str = field(metadata={"help": "The describer's descriptions CSV/JSONL (e.g. realness annotate's output)."})
    core: str = field(default="offline", metadata={"help": "CORE model (fusion) that scores every description set."})
    image_core: str = field(default=IMAGE_ONLY_CORE, metadata={"help": "Image-only CORE for the no-text floor ('none' "
                                                                       "to skip)."})
    train_images: str | None = field(default=None, metadata={"help": "Training images for the retrieval baseline (must "
                                                                     "not overlap --images)."})
    train_descriptions: str | None = field(default=None, metadata={"help": "Their reference descriptions (retrieval "
                                                                           "baseline)."})
    constant: str = field(default=CONSTANT, metadata={"help": "The content-free sentence of the constant baseline."})
    min_kappa: float = field(default=0.2, metadata={"help": "Pass needs quadratic-weighted kappa above this (0.2: "
                                                            "'fair' agreement)."})
    n_boot: int = field(default=1000, metadata={"help": "Paired bootstrap resamples."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap and the shuffled baseline."})
    encoder: str | None = field(default=None, metadata={"help": "Sentence encoder for embedding similarity (default: "
                                                                "offline all-MiniLM-L6-v2)."})
    images_per_s: float | None = field(default=None, metadata={"help": "Measured describer throughput for the cost "
                                                                       "estimate."})
    gpu_hour_price: float = field(default=2.0, metadata={"help": "$ per GPU hour."})
    api_price_per_1k: float | None = field(default=None, metadata={"help": "API $ per 1,000 images to compare with."})
    out: str | None = field(default=None, metadata={"help": "Folder for gate.json, the whole report (default: print "
                                                            "only)."})
    save_to: str | None = field(default=None, metadata={"help": "Also write gate.json into this describer or adapter "
                                                                "folder, where `realness run --core auto` reads "
                                                                "whether the describer's text helps CORE (default: "
                                                                "none)."})
    regions: bool = field(default=False, metadata={"help": "Also run the region detectors (faces, hands, people, "
                                                           "text) on every image for the hallucination shares: "
                                                           "descriptions that name a kind neither the detectors nor "
                                                           "the reference saw, and that leave out one both saw."})
    no_fail: bool = field(default=False, metadata={"help": "Exit 0 even when the gate fails (numbers only)."})


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 with stemming, as the `rouge-score` reference implementation computes it."""
    from rouge_score import rouge_scorer

    return float(rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, candidate)["rougeL"].fmeasure)


def load_encoder(encoder: str | None = None) -> tuple:
    """`(tokenizer, model)` of a sentence encoder (default: the offline all-MiniLM-L6-v2)."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_text_encoder(encoder or OFFLINE_TEXT_ENCODER)
    return AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()


def embedding_similarity(references: Sequence[str], candidates: Sequence[str], encoder=None,
                         batch_size: int = 32) -> float:
    """Mean cosine similarity of mean-pooled sentence embeddings; `encoder` is a name or folder (default:
    offline MiniLM) or a loaded `(tokenizer, model)` from `load_encoder`."""
    import torch
    import torch.nn.functional as F

    tok, model = encoder if isinstance(encoder, tuple) else load_encoder(encoder)

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

    ref = {"srocc": srocc(pred_reference, mos), "plcc": plcc(pred_reference, mos)}
    cand = {"srocc": srocc(pred_candidate, mos), "plcc": plcc(pred_candidate, mos)}
    return {"reference": ref, "describer": cand,
            "ratio": {k: cand[k] / ref[k] if ref[k] else float("nan") for k in ref}}


def text_value_retained(candidate: float, reference: float, floor: float) -> float:
    """(candidate - floor) / (reference - floor): the share of the reference text's gain over the best
    content-free floor that the candidate's text keeps (NaN when the reference does not beat the floor)."""
    return (candidate - floor) / (reference - floor) if reference > floor else float("nan")


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A seeded permutation with no fixed point (n >= 2): image i gets item out[i] != i."""
    if n < 2:
        raise ValueError("the shuffled baseline needs at least 2 images")
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=int)
    out[order] = np.roll(order, -1)  # each image takes the next one's item in a random cycle
    return out


def paired_bootstrap(mos: Sequence[float], scores: dict[str, Sequence[float]], candidate: str, reference: str,
                     n_boot: int = 1000, seed: int = 0) -> dict:
    """The same image resamples for every row: the SROCC ratio candidate / reference and candidate minus
    each other row, each as mean and 95 % percentile interval."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    mos = np.asarray(mos, dtype=float)
    arrays = {k: np.asarray(v, dtype=float) for k, v in scores.items()}
    draws: dict[str, list[float]] = {"ratio": []} | {f"minus_{k}": [] for k in arrays if k != candidate}
    for _ in range(n_boot):
        i = rng.integers(0, len(mos), len(mos))
        if np.ptp(mos[i]) == 0:
            continue
        rho = {k: spearmanr(v[i], mos[i])[0] for k, v in arrays.items()}
        draws["ratio"].append(rho[candidate] / rho[reference] if rho[reference] else np.nan)
        for k in arrays:
            if k != candidate:
                draws[f"minus_{k}"].append(rho[candidate] - rho[k])
    out = {}
    for k, v in draws.items():
        v = np.asarray(v, dtype=float)
        v = v[np.isfinite(v)]
        lo, hi = np.percentile(v, [2.5, 97.5]) if len(v) else (np.nan, np.nan)
        out[k] = {"mean": float(np.mean(v)) if len(v) else float("nan"), "ci95": [float(lo), float(hi)]}
    return out


def _retrieval(core, paths: list[Path], cfg: GateConfig) -> dict[str, str]:
    """Each image -> the reference description of its nearest training image (cosine, CORE's image encoder)."""
    import torch
    import torch.nn.functional as F

    train_desc = load_descriptions(cfg.train_descriptions)
    train = [p for p in list_images(cfg.train_images) if train_desc.get(p.name)]
    if not train:
        raise ValueError(f"{cfg.train_images}: no training image has a description in {cfg.train_descriptions}")
    overlap = {sha256_file(p) for p in paths} & {sha256_file(p) for p in train}
    if overlap:
        raise ValueError(f"{cfg.train_images}: {len(overlap)} image(s) also in {cfg.images} (same content); the "
                         "retrieval baseline must not see the images it is scored on")

    @torch.no_grad()
    def encode(files):
        out = []
        for i in range(0, len(files), 16):
            x = torch.stack([core.processor.image_tensor(load_image(f)) for f in files[i:i + 16]])
            out.append(F.normalize(core.image_backbone(x).float(), dim=-1))
        return torch.cat(out)

    nearest = (encode(paths) @ encode(train).T).argmax(1).tolist()
    return {p.name: train_desc[train[j].name] for p, j in zip(paths, nearest)}


def evaluate_describer(cfg: GateConfig) -> dict:
    """`realness eval-describer`: the whole gate on the images that have MOS and both descriptions.

    Every input and model is read and checked before any image is scored; bad input raises ValueError or
    FileNotFoundError (the command's exit 2)."""

    mos, ref, cand = read_truth(cfg.truth), load_descriptions(cfg.reference), load_descriptions(cfg.candidate)
    boxed = sum(bool(find_boxes(t)[0]) for t in cand.values())
    cand = {n: strip_boxes(t) for n, t in cand.items()}  # a grounded claim's box is not text to compare
    if not cand:
        raise ValueError(f"{cfg.candidate}: no descriptions")
    if bool(cfg.train_images) != bool(cfg.train_descriptions):
        raise ValueError("the retrieval baseline needs both --train_images and --train_descriptions")
    paths = [p for p in list_images(cfg.images) if p.name in mos and ref.get(p.name) and cand.get(p.name)]
    if len(paths) < 3:
        raise ValueError(f"only {len(paths)} image(s) in {cfg.images} have a score and both descriptions")
    core = CoreModel.from_pretrained(cfg.core)
    if not core.config.uses_text:
        raise ValueError(f"{cfg.core}: an image-only CORE cannot read descriptions; --core needs a fusion model")
    image_core = None if cfg.image_core == "none" else CoreModel.from_pretrained(cfg.image_core)
    encoder = load_encoder(cfg.encoder)
    if image_core is not None and image_core.config.uses_text:
        raise ValueError(f"{cfg.image_core}: --image_core must be an image-only CORE model")
    names = [p.name for p in paths]
    texts = {"reference": ref, "candidate": cand, "constant": {n: cfg.constant for n in names},
             "shuffled": {n: ref[names[j]] for n, j in zip(names, derangement(len(names), cfg.seed))}}
    if cfg.train_images:
        texts["retrieval"] = _retrieval(core, paths, cfg)

    scores = {k: {r.filename: r.score_z for r in score_images(core, paths, t, progress=False)} for k, t in texts.items()}
    if image_core is not None:
        scores["image_only"] = {r.filename: r.score_z for r in score_images(image_core, paths, None, progress=False)}
    names = [n for n in names if all(s.get(n) is not None for s in scores.values())]
    y = [mos[n] for n in names]
    rows = {k: [s[n] for n in names] for k, s in scores.items()}

    table = {k: {"srocc": srocc(v, y), "plcc": plcc(v, y)} for k, v in rows.items()}
    floors = [k for k in table if k not in ("reference", "candidate")]
    content_free = max(table[k]["srocc"] for k in ("constant", "shuffled"))
    refs, cands = [ref[n] for n in names], [cand[n] for n in names]
    verdicts = verdict_report(refs, cands)
    cand_rho, ref_rho = table["candidate"]["srocc"], table["reference"]["srocc"]
    reasons = [f"candidate SROCC {cand_rho:.3f} is not above the {k} baseline's {table[k]['srocc']:.3f}"
               for k in floors if not cand_rho > table[k]["srocc"]]
    if not verdicts["kappa_quadratic"] > cfg.min_kappa:
        reasons.append(f"verdict kappa {verdicts['kappa_quadratic']:.3f} is not above {cfg.min_kappa}")
    report = {
        "n": len(names), "core": cfg.core, "image_core": cfg.image_core,
        "scores": table, "floors": floors,
        "srocc_ratio": cand_rho / ref_rho if ref_rho else float("nan"),
        "text_value_retained": text_value_retained(cand_rho, ref_rho, content_free),
        "text_value_retained_means": "share of the reference text's SROCC gain over the best content-free baseline "
                                     "(constant, shuffled) that the candidate keeps: 1 = all, 0 = none, < 0 = harm",
        "bootstrap": paired_bootstrap(y, rows, "candidate", "reference", cfg.n_boot, cfg.seed) | {"n_boot": cfg.n_boot},
        "verdicts": verdicts,
        "mentions": mention_report(refs, cands),
        "mentions_discussed": mention_report(refs, cands, reader=discussed),
        "text": {"rouge_l": float(np.mean([rouge_l(r, c) for r, c in zip(refs, cands)])),
                 "embedding_similarity": embedding_similarity(refs, cands, encoder)},
        "thresholds": {"beat": floors, "min_kappa": cfg.min_kappa},
        "passed": not reasons, "reasons": reasons,
    }
    # Kept for readers of earlier reports (distill.json).
    report["core_agreement"] = core_agreement(rows["reference"], rows["candidate"], y)
    if cfg.images_per_s:
        report["cost"] = {"images_per_s": cfg.images_per_s, "gpu_hour_price": cfg.gpu_hour_price,
                          "describer_per_1000": cost_per_1000(cfg.images_per_s, cfg.gpu_hour_price),
                          "api_per_1000": cfg.api_price_per_1k}
    if cfg.regions:
        report["hallucination"] = hallucination_report(refs, cands, labels_found([p for p in paths if p.name in names]))
    report["grounded_descriptions"] = boxed  # with at least one boxed claim (left out of every comparison)
    report["summary"] = summary(report)
    for folder in (cfg.out, cfg.save_to):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            write_text_atomic(Path(folder) / GATE_FILE, json.dumps(report, indent=2) + "\n")
    return report


def summary(report: dict) -> str:
    """The gate in two sentences, as `realness run` prints and the report shows it for a stand-in describer."""
    s, v = report["scores"], report["verdicts"]
    floors = ", ".join(f"{s[k]['srocc']:.3f} {FLOOR_WORDS.get(k, k)}" for k in report["floors"])
    worth = "It passes the gate." if report["passed"] else "It fails the gate: " + "; ".join(report["reasons"]) + "."
    return (f"On {report['n']} images: verdict agreement with the reference {v['agreement']:.0%} (majority class "
            f"{v['majority_baseline']:.0%}, kappa {v['kappa_quadratic']:.2f}); CORE SROCC {s['candidate']['srocc']:.3f} "
            f"with its text vs {s['reference']['srocc']:.3f} with the reference's ({floors}). {worth}")


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def format_gate(report: dict) -> str:
    """The console table: every row's SROCC / PLCC, the intervals, the verdict statistics and the verdict."""
    boot = report["bootstrap"]
    lines = [f"{'CORE scored with':<22}{'SROCC':>8}{'PLCC':>8}   candidate minus, 95 % interval"]
    for k, v in report["scores"].items():
        diff = boot.get(f"minus_{k}")
        tail = f"   {diff['mean']:+.3f} [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}]" if diff else ""
        lines.append(f"{k:<22}{v['srocc']:>8.3f}{v['plcc']:>8.3f}{tail}")
    v = report["verdicts"]
    r = boot["ratio"]
    lines += [f"SROCC ratio candidate/reference {report['srocc_ratio']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]; "
              f"text value retained {report['text_value_retained']:.3f}",
              f"verdicts: agreement {v['agreement']:.1%} (majority '{v['majority_class']}' {v['majority_baseline']:.1%}), "
              f"quadratic kappa {v['kappa_quadratic']:.3f}, no verdict {v['no_verdict_share']:.1%}",
              f"mentions against the reference: macro-F1 {_num(report['mentions']['macro_f1'])} over "
              f"{report['mentions']['categories_scored']} categories"
              + (f" (discussed, blanket lists left out: {_num(report['mentions_discussed']['macro_f1'])}; "
                 f"{report['mentions_discussed']['blanket_lists']['candidate']:.0%} of descriptions hold one)"
                 if "mentions_discussed" in report else "")
              + (f"; hallucinated {report['hallucination']['hallucinated']:.1%}, missed "
                 f"{report['hallucination']['missed']:.1%} (faces, hands, people, text)" if "hallucination" in report
                 else ""),
              "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["reasons"])]
    return "\n".join(lines)
