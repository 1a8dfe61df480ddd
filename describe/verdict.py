"""Let image-only CORE set the describer's verdict, and the describer explain it.

A describer's answer starts with a verdict (Yes / Somewhat / No: is anything unrealistic?). A small
describer learns that one word as one token among thirty, and the bundled one guesses it (kappa 0.01
against GPT-4.1 on held-out images), so its report could say "No" beside a low realness score. Image-only
CORE ranks realness far better than that guess. A *verdict guide* thresholds CORE's predicted z-score into
a verdict and writes that word as the start of the answer; the describer then writes the rest, conditioned
on it (greedy, as always):

    z < thresholds[0]                -> "Yes"       (something looks unreal)
    thresholds[0] <= z < thresholds[1] -> "Somewhat"
    z >= thresholds[1]               -> "No"

The thresholds are fitted on held-out predictions (`fit_thresholds`): CORE's out-of-fold z-scores cut at
the quantiles where the reference descriptions' verdicts change, so the describer says each verdict as often
as the reference did. Nothing is trained: the verdict adds no information beyond the image-only score, it makes
the describer's text agree with it. A describer folder (or its adapter folder) that holds `verdict.json` uses
its guide unless told otherwise (`verdict_guide="none"`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realness.answers import parse_verdict, verdict_report
from realness.core.modeling import CoreModel
from realness.data import load_descriptions
from realness.devices import resolve_device
from realness.evaluation import out_of_fold

VERDICT_FILE = "verdict.json"
ORDER = ("yes", "somewhat", "no")  # from least to most real
WORDS = {"yes": "Yes", "somewhat": "Somewhat", "no": "No"}
HELP = ("Who sets each answer's Yes / Somewhat / No: 'auto' (image-only CORE through the describer folder's "
        f"{VERDICT_FILE}, when it has one, as the bundled offline/small-describer does; otherwise the model), "
        "'none' (always the model), or a verdict.json path (default: auto)")


@dataclass
class VerdictGuide:
    """Image-only CORE's z-score, cut into a verdict.

    Args:
        core: an image-only CORE model: bundled name (`offline-image`) or folder.
        thresholds: (yes|somewhat, somewhat|no) cut points on CORE's z-score, ascending.
        fitted_on: where the thresholds came from (shown with the describer's info).
        device: where CORE runs (not saved; default: cuda when available); the describer sets its own.
    """

    core: str
    thresholds: tuple[float, float]
    fitted_on: str = ""
    device: str | None = field(default=None, repr=False, compare=False)
    _model: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        low, high = (float(t) for t in self.thresholds)
        if not low <= high:
            raise ValueError(f"verdict thresholds must be ascending, got {list(self.thresholds)}")
        self.thresholds = (low, high)

    def verdict(self, z: float) -> str:
        """yes / somewhat / no for one predicted z-score."""
        return ORDER[int(np.searchsorted(self.thresholds, z, side="right"))]

    def model(self):
        """The CORE model (loaded once)."""
        if self._model is None:
            device = resolve_device(self.device)
            model = CoreModel.from_pretrained(self.core, device=device)
            if model.config.uses_text:
                raise ValueError(f"verdict guide: CORE {self.core!r} reads descriptions; it must be image-only "
                                 "(the describer has not written one yet)")
            self._model = model
        return self._model

    def scores(self, images: Sequence, batch_size: int = 8) -> list[float]:
        """CORE's predicted z-score per PIL image."""
        return [float(z) for z in self.model().predict(list(images), None, batch_size=batch_size)]

    def prefixes(self, images: Sequence, batch_size: int = 8) -> list[str]:
        """The answer's first word per image: "Yes", "Somewhat" or "No"."""
        return [WORDS[self.verdict(z)] for z in self.scores(images, batch_size)]

    def info(self) -> dict:
        return {"core": self.core, "thresholds": list(self.thresholds), "fitted_on": self.fitted_on}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / VERDICT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.info(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> VerdictGuide:
        """From a `verdict.json` file or a folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / VERDICT_FILE
        try:
            data = json.loads(path.read_text())
            return cls(core=data["core"], thresholds=tuple(data["thresholds"]), fitted_on=data.get("fitted_on", ""))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a verdict guide ({err})") from err


def fit_thresholds(pred_z: Sequence[float], verdicts: Sequence[str]) -> tuple[float, float]:
    """Cut points on held-out predictions that give each verdict the share it has in `verdicts`
    (the reference's: GPT-4.1's on RAISE-TD). Unparsed verdicts ("") are left out."""
    pred = np.asarray(pred_z, dtype=float)
    labels = np.asarray([v.lower() for v in verdicts])
    keep = np.isin(labels, ORDER) & np.isfinite(pred)
    if keep.sum() < 3:
        raise ValueError(f"need at least 3 predictions with a verdict, got {int(keep.sum())}")
    pred, labels = pred[keep], labels[keep]
    shares = np.array([(labels == v).mean() for v in ORDER])
    low, high = np.quantile(pred, [shares[0], shares[0] + shares[1]])
    return float(low), float(high)


def fit_guide(cv: str | Path, reference: str | Path, core: str, names: Sequence[str] | None = None) -> tuple[VerdictGuide, dict]:
    """`(guide, report)`: thresholds fitted on `cv`'s out-of-fold predictions (restricted to `names` if
    given) against `reference`'s verdicts, and the verdict agreement those predictions reach."""

    pred = out_of_fold(cv)
    ref = load_descriptions(Path(reference))
    names = sorted(n for n in (names or pred) if n in pred and n in ref)
    verdicts = [parse_verdict(ref[n])[0] for n in names]
    thresholds = fit_thresholds([pred[n] for n in names], verdicts)
    guide = VerdictGuide(core, thresholds, fitted_on=f"held-out predictions of {len(names)} images ({Path(cv).name}) "
                                                     f"matched to {Path(reference).name}'s verdict shares")
    guided = [WORDS[guide.verdict(pred[n])] for n in names]
    report = verdict_report([ref[n] for n in names], guided)
    report.update(thresholds=list(thresholds), images=len(names),
                  shares={v: guided.count(WORDS[v]) / len(names) for v in WORDS})
    return guide, report


def resolve_guide(spec: str | Path | None, *folders: str | Path | None) -> VerdictGuide | None:
    """The guide a describer runs with: `spec` "auto" looks for `verdict.json` in `folders` (the adapter's,
    then the model's; the first found wins), "none" (or None) turns it off, anything else is a guide file
    or folder, which must exist."""
    if spec is None or str(spec) == "none":
        return None
    if str(spec) == "auto":
        for folder in folders:
            if folder is not None and (Path(folder) / VERDICT_FILE).is_file():
                return VerdictGuide.load(folder)
        return None
    return VerdictGuide.load(spec)

