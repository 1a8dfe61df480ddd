"""Fit a describer's verdict guide (`describe.verdict`) on cross-validated image-only CORE predictions.

    python eval/fit_verdict_guide.py --cv eval/out/cv3/image-only-size448-rank --core offline-image \\
        --out describe/pretrained/small-describer

`--cv` is an image-only CORE cross-validation folder of the same recipe as `--core` (`eval/cv_core.py` or
`realness train-core --mode image`): every image's held-out prediction, averaged over seeds. The cut points
give each verdict the share it has in the reference descriptions (GPT-4.1's), and the script prints how the
guided verdicts agree with the reference on those same held-out predictions. Writes `OUT/verdict.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from describe.verdict import fit_guide
from realness.argparsing import parse_dataclasses


@dataclass
class FitVerdictGuideConfig:
    """Options of `python eval/fit_verdict_guide.py` (the same parser as every `realness` command)."""

    cv: str = field(metadata={"help": "Image-only CORE cross-validation folder"})
    out: str = field(metadata={"help": "Folder to write verdict.json into"})
    core: str = field(default="offline-image", metadata={
        "help": "The image-only CORE the guide runs: bundled name or folder"})
    reference: str = field(default="../shared/data/raise-train/descriptions_gpt41.csv", metadata={
        "default_help": "RAISE-TD's GPT-4.1 CSV",
        "help": "Reference descriptions whose verdict shares are matched"})


def main() -> None:
    (a,) = parse_dataclasses([FitVerdictGuideConfig], None, prog="python eval/fit_verdict_guide.py", description=__doc__)
    guide, report = fit_guide(a.cv, a.reference, a.core)
    path = guide.save(a.out)
    print(json.dumps({k: report[k] for k in ("images", "thresholds", "shares", "agreement", "majority_baseline",
                                             "kappa_quadratic")}, indent=2))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
