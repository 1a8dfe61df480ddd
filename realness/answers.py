"""The answer contract every describer follows, and how answers are compared.

An answer starts with Yes, No or Somewhat (is anything unreal?) and explains in at most about 30 words
what looks unreal. Models below the describer (DREAM reads the verdict) and the gate (verdict agreement)
read answers, so the contract lives here in the base layer; `describe.prompt` holds the question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from realness.boxes import find_boxes, strip_boxes

VERDICTS = ("yes", "no", "somewhat")
VERDICT_ORDER = ("no", "somewhat", "yes")  # ordinal, for kappa
MAX_WORDS = 35  # "maximum 30 words" in the prompt; GPT-4.1 itself goes to ~33
_VERDICT = re.compile(r"^\s*(yes|no|somewhat)\b[\s,.:;!\-–—]*", re.IGNORECASE)


def parse_verdict(text: str) -> tuple[str, str]:
    """`(verdict, rest)`: verdict is yes/no/somewhat, or "" when the text does not start with one."""
    if not text or not text.strip():
        raise ValueError("empty description: nothing to parse")
    m = _VERDICT.match(text)
    if not m:
        return "", text.strip()
    return m.group(1).lower(), text[m.end():].strip()


@dataclass
class Answer:
    """A parsed answer; `ok` is False (with `problems`) when it breaks the contract."""

    text: str
    verdict: str
    explanation: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_answer(text: str, max_words: int = MAX_WORDS) -> Answer:
    """Split an answer into verdict and explanation and check the contract."""
    text = (text or "").strip()
    if not text:
        return Answer(text, "", "", ["empty answer"])
    verdict, explanation = parse_verdict(text)
    problems = []
    if not verdict:
        problems.append("does not start with Yes, No or Somewhat")
    problems += find_boxes(explanation)[1]  # a grounded claim's box must be well formed (realness.boxes)
    words = len(strip_boxes(explanation).split())  # boxes are not words
    if words > max_words:
        problems.append(f"explanation has {words} words (at most {max_words})")
    if verdict in ("yes", "somewhat") and words == 0:
        problems.append(f"'{verdict}' without an explanation")
    return Answer(text, verdict, explanation, problems)


def verdict_accuracy(references: Sequence[str], candidates: Sequence[str]) -> float:
    """Share of pairs whose Yes / No / Somewhat verdicts agree (a missing verdict never agrees)."""
    agree = [parse_verdict(r)[0] == parse_verdict(c)[0] != "" if c.strip() else False
             for r, c in zip(references, candidates)]
    return float(np.mean(agree)) if agree else float("nan")


def verdict_report(references: Sequence[str], candidates: Sequence[str]) -> dict:
    """Agreement, majority-class baseline, quadratic-weighted kappa, confusion matrix, unparseable share.

    Kappa and the matrix cover the pairs where both have a verdict; a missing candidate verdict counts
    as a disagreement in `agreement` and is reported in `no_verdict_share`."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    ref = [parse_verdict(r)[0] for r in references]
    cand = [parse_verdict(c)[0] if c.strip() else "" for c in candidates]
    both = [i for i, (r, c) in enumerate(zip(ref, cand)) if r and c]
    majority = max(VERDICT_ORDER, key=ref.count)
    code = {v: i for i, v in enumerate(VERDICT_ORDER)}
    a, b = [code[ref[i]] for i in both], [code[cand[i]] for i in both]
    kappa = float(cohen_kappa_score(a, b, weights="quadratic", labels=[0, 1, 2])) if len(set(a) | set(b)) > 1 else 0.0
    return {"agreement": verdict_accuracy(references, candidates), "majority_class": majority,
            "majority_baseline": float(np.mean([r == majority for r in ref])),
            "kappa_quadratic": 0.0 if np.isnan(kappa) else kappa,
            "confusion": {"rows": "reference", "columns": "candidate", "order": list(VERDICT_ORDER),
                          "matrix": confusion_matrix([ref[i] for i in both], [cand[i] for i in both],
                                                     labels=list(VERDICT_ORDER)).tolist()},
            "no_verdict_share": float(np.mean([not c for c in cand])) if cand else float("nan")}
