"""What a describer talks about, against GPT-4.1, on the images a `train_describer` run held out.

    python eval/eval_mentions.py --run runs/describer-small-val --describer runs/small-base --out eval/out/mentions

The run's `split.json` names the held-out images; its `adapter/` (on `--describer`) describes each of them
(transformers engine, greedy; an adapter trained with regions gets each image's stage-1 regions and crops,
from `--regions_file` when given; one trained with aspects also gets the aspects `--aspect_model` flags,
cached in the same file, so give each tagger its own file), or `--candidate FILE` gives descriptions already
written. Boxes of grounded
claims are left out before mentions are counted. Then, against the
RAISE-TD GPT-4.1 descriptions of the same images (`realness.mentions`):
- per-category precision / recall / F1 of the describer's mentions and their macro-F1;
- with the region detectors on each image: the share of descriptions naming a face, hand, person or text that
  neither the detectors nor GPT-4.1 saw (hallucinated), and the share leaving out one both saw (missed);
- the same two shares for GPT-4.1's own text against the detectors alone (what the detectors miss or invent
  shows up there as GPT-4.1 "hallucinating").
- with `--baseline FILE` (another describer's descriptions of the same images), the difference of the two
  macro-F1s, plain and discussed, with 95 % paired bootstrap intervals over the images.
Writes `mentions.json`, `mentions.md` and `descriptions.csv` (the describer's text) in `--out`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from describe.engines.transformers import Describer
from describe.grounding import find_regions, shown_regions
from describe.prompt import RegionPrompt, parse_claims, saved_region_prompt, strip_boxes
from realness.argparsing import parse_dataclasses
from realness.boxes import to_grid
from realness.data import load_descriptions
from realness.dream.configuration import DreamConfig
from realness.dream.evidence import named_labels
from realness.dream.regions import labels_found
from realness.images import load_image
from realness.mentions import (
    CATEGORIES,
    DETECTABLE,
    MENTIONS,
    discussed,
    hallucination_report,
    mention_report,
    mentions,
    paired_comparison,
)

RAISE = Path(os.environ.get("REALNESS_RAISE_DIR") or "../shared/data/raise-train")


@dataclass
class EvalMentionsConfig:
    """Options of `python eval/eval_mentions.py` (the same parser as every `realness` command)."""

    run: str = field(metadata={"help": "A train_describer output folder (split.json, adapter/)."})
    out: str = field(default="eval/out/mentions", metadata={"help": "Output folder."})
    describer: str = field(default="runs/small-base", metadata={"help": "The base the run's adapter goes on."})
    candidate: str | None = field(default=None, metadata={"help": "Descriptions already written for the held-out "
                                                                  "images, instead of describing them."})
    baseline: str | None = field(default=None, metadata={"help": "Another describer's descriptions of the same "
                                                                 "images (e.g. the ungrounded retrain's): the "
                                                                 "macro-F1 difference with a 95 % paired bootstrap "
                                                                 "interval (realness.mentions.paired_comparison)."})
    reference: str = field(default=str(RAISE / "descriptions_gpt41.csv"), metadata={
        "default_help": "$REALNESS_RAISE_DIR/descriptions_gpt41.csv", "help": "The reference descriptions."})
    images: str = field(default=str(RAISE / "images"), metadata={
        "default_help": "$REALNESS_RAISE_DIR/images", "help": "Folder of the held-out images."})
    batch_size: int = field(default=8, metadata={"help": "Images per generate call."})
    max_tokens: int = field(default=64, metadata={"help": "Answer length cap in tokens."})
    steer: float | None = field(default=None, metadata={"help": "Aspect steering: logit bias towards each listed "
                                                                "aspect not yet discussed (describe.steering); 0: "
                                                                "plain greedy. Default: the adapter's regions.json."})
    regions: bool = field(default=True, metadata={"help": "Run the region detectors for the hallucination shares."})
    aspect_model: str = field(default="offline/aspect-tagger", metadata={"help": "The aspect tagger that gives an "
                                                                               "adapter trained with aspects its "
                                                                               "aspects (a folder from training/"
                                                                               "train_aspect_tagger.py: for a "
                                                                               "validation run, the tagger fitted on "
                                                                               "the same training images)."})
    regions_file: str | None = field(default=None, metadata={"help": "Stage-1 regions JSONL (describe.grounding."
                                                                     "find_regions; written if missing): the regions "
                                                                     "a region-trained describer is given and the "
                                                                     "detected kinds, found once. Default: detect "
                                                                     "here."})


def _table(report: dict) -> list[str]:
    lines = ["| category | GPT-4.1 mentions | describer mentions | both | precision | recall | F1 |", "|---" * 7 + "|"]
    fmt = lambda x: "n/a" if x is None else f"{x:.2f}"  # noqa: E731
    for c in CATEGORIES:
        v = report["categories"][c]
        lines.append(f"| {c} | {v['reference']} | {v['candidate']} | {v['both']} | {fmt(v['precision'])} | "
                     f"{fmt(v['recall'])} | {fmt(v['f1'])} |")
    lines.append(f"| **macro-F1** ({report['categories_scored']} categories) | | | | | | **{fmt(report['macro_f1'])}** |")
    return lines


def _box_report(claims: list[list[dict]], stage1: list, prompt: RegionPrompt) -> dict:
    """How the boxed claims sit: on a region the prompt listed (copied exactly), and naming that region's kind."""
    listed = on_region = right_kind = 0
    for image_claims, found in zip(claims, stage1):
        if found is None:
            continue
        size, regions = found
        shown = {to_grid(r.box, size): r.label for r in shown_regions(regions, prompt)}
        for c in image_claims:
            listed += 1
            label = shown.get(tuple(c["box"]))
            on_region += label is not None
            right_kind += label is not None and label in named_labels(c["claim"])
    return {"descriptions_with_a_box": sum(bool(c) for c in claims), "boxes": sum(map(len, claims)),
            "boxes_checked": listed, "on_a_listed_region": on_region, "naming_its_kind": right_kind}


def _aspect_report(refs: list[str], cand: list[str], aspects: list) -> dict:
    """The aspects line against GPT-4.1 (mention F1 of the tagger alone) and how closely the describer kept to it."""
    as_text = [" ".join(MENTIONS[c][0] for c in x) for x in aspects]  # each category by one of its words
    listed = sum(len(x) for x in aspects)
    said = [mentions(c) for c in cand]
    kept = sum(len(set(x) & m) for x, m in zip(aspects, said))
    return {"tagger": mention_report(refs, as_text), "listed": listed,
            "listed_discussed": kept / listed if listed else None,
            "discussed_listed": kept / max(1, sum(map(len, said)))}


def main(argv=None) -> dict:
    (a,) = parse_dataclasses([EvalMentionsConfig], argv, prog="python eval/eval_mentions.py", description=__doc__)
    held = json.loads((Path(a.run) / "split.json").read_text())["held_out"]
    ref = load_descriptions(Path(a.reference))
    names = [n for n in held if ref.get(n)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = None
    prompt = saved_region_prompt(Path(a.run) / "adapter") or RegionPrompt()
    stage1 = (find_regions([Path(a.images) / n for n in names], a.regions_file, DreamConfig(aspect_model=a.aspect_model),
                           aspects=prompt.aspects) if a.regions_file else None)
    if a.candidate:
        given = load_descriptions(Path(a.candidate))
        cand = [given.get(n, "") for n in names]
    else:
        given_prompt = dataclasses.replace(prompt, steer=a.steer) if a.steer is not None else "auto"
        describer = Describer(a.describer, str(Path(a.run) / "adapter"), device="cpu", max_new_tokens=a.max_tokens,
                              regions=given_prompt)
        if describer.uses_regions and describer.regions.aspects and stage1 is None:
            raise SystemExit("an adapter trained with aspects needs --regions_file (stage 1 with the aspect tagger "
                             "named by --aspect_model)")
        start, cand = time.perf_counter(), []
        for i in tqdm(range(0, len(names), a.batch_size), desc="describing", unit="batch", file=sys.stderr):
            batch = names[i:i + a.batch_size]
            images = [load_image(Path(a.images) / n) for n in batch]
            given = [stage1[n][1] for n in batch] if stage1 is not None and describer.uses_regions else None
            cand += describer.generate(images, a.batch_size, given)
        describer.close()
        seconds = time.perf_counter() - start
        with (out / "descriptions.csv").open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([["filename", "description"], *zip(names, cand)])
    refs = [ref[n] for n in names]
    claims = [parse_claims(c)[0] for c in cand]
    cand = [strip_boxes(c) for c in cand]
    report = {"run": a.run, "images": len(names), "steer": prompt.steer if a.steer is None else a.steer,
              "describe_s": seconds, "mentions": mention_report(refs, cand),
              "mentions_discussed": mention_report(refs, cand, reader=discussed),
              "grounded": _box_report(claims, [stage1.get(n) if stage1 else None for n in names],
                                      prompt)}
    d = report["mentions_discussed"]
    lines = [f"{len(names)} held-out images of {a.run}", "", *_table(report["mentions"]), "",
             f"discussed (blanket lists left out, realness.mentions): macro-F1 {d['macro_f1']:.2f}; descriptions with a "
             f"blanket list: describer {d['blanket_lists']['candidate']:.1%}, GPT-4.1 {d['blanket_lists']['reference']:.1%}"]
    if a.baseline:
        given = load_descriptions(Path(a.baseline))
        if missing := [n for n in names if n not in given]:
            raise SystemExit(f"{a.baseline}: no description of {len(missing)} held-out images (first: {missing[0]})")
        base = [strip_boxes(given[n]) for n in names]
        report["versus_baseline"] = {"baseline": a.baseline, "mentions": paired_comparison(refs, cand, base),
                                     "mentions_discussed": paired_comparison(refs, cand, base, reader=discussed)}
        for key, what in (("mentions", "macro-F1"), ("mentions_discussed", "discussed macro-F1")):
            v = report["versus_baseline"][key]
            lines += ["", f"against {a.baseline}: {what} {v['candidate']:.3f} vs {v['baseline']:.3f}, difference "
                          f"{v['difference']:+.3f} (95 % paired bootstrap {v['ci'][0]:+.3f} to {v['ci'][1]:+.3f}; "
                          f"not ahead in {v['not_ahead']:.1%} of resamples)"]
    aspects = [getattr(stage1[n][1], "aspects", None) for n in names] if stage1 is not None else []
    if aspects and all(x is not None for x in aspects):
        report["aspects"] = _aspect_report(refs, cand, aspects)
        g = report["aspects"]
        lines += ["", f"aspects (the tagger alone, against GPT-4.1): macro-F1 {g['tagger']['macro_f1']:.2f}; the "
                      f"describer discusses {g['listed_discussed']:.1%} of the aspects listed, and "
                      f"{g['discussed_listed']:.1%} of what it discusses was listed"]
    if a.regions:
        found = ([{r.label for r in stage1[n][1]} for n in names] if stage1 is not None
                 else labels_found([Path(a.images) / n for n in names]))
        report["hallucination"] = hallucination_report(refs, cand, found)
        report["reference_vs_detectors"] = hallucination_report([""] * len(refs), refs, found)
        report["detected"] = {k: sum(k in f for f in found) for k in DETECTABLE}
        h, g = report["hallucination"], report["reference_vs_detectors"]
        lines += ["", f"describer: hallucinated {h['hallucinated']:.1%}, missed {h['missed']:.1%} "
                      f"(per kind {h['per_kind']}); GPT-4.1 against the detectors alone: names an undetected kind "
                      f"{g['hallucinated']:.1%}; images with a detected face / hand / person / text: {report['detected']}"]
    g = report["grounded"]
    lines += ["", f"boxed claims: {g['boxes']} in {g['descriptions_with_a_box']} descriptions; of {g['boxes_checked']} "
                  f"checked, {g['on_a_listed_region']} on a region the prompt listed, {g['naming_its_kind']} naming its kind"]
    (out / "mentions.json").write_text(json.dumps(report, indent=2))
    (out / "mentions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
