"""Fit a describer's verdict guide (`describe.verdict`) on cross-validated image-only CORE predictions.

    python eval/fit_verdict_guide.py --cv eval/out/cv3/image-only-size448-rank --core offline-image \\
        --out describe/pretrained/small-describer

`--cv` is an image-only CORE cross-validation folder of the same recipe as `--core` (`eval/cv_core.py` or
`realness train-core --mode image`): every image's held-out prediction, averaged over seeds. The cut points
give each verdict the share it has in the reference descriptions (GPT-4.1's), and the script prints how the
guided verdicts agree with the reference on those same held-out predictions. Writes `OUT/verdict.json`.
"""

from __future__ import annotations

import argparse
import json

from describe.verdict import fit_guide


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cv", required=True, help="Image-only CORE cross-validation folder (required)")
    p.add_argument("--core", default="offline-image", help="The image-only CORE the guide runs: bundled name or folder "
                   "(default: offline-image)")
    p.add_argument("--reference", default="../shared/data/raise-train/descriptions_gpt41.csv",
                   help="Reference descriptions whose verdict shares are matched (default: RAISE-TD's GPT-4.1 CSV)")
    p.add_argument("--out", required=True, help="Folder to write verdict.json into (required)")
    a = p.parse_args()
    guide, report = fit_guide(a.cv, a.reference, a.core)
    path = guide.save(a.out)
    print(json.dumps({k: report[k] for k in ("images", "thresholds", "shares", "agreement", "majority_baseline",
                                             "kappa_quadratic")}, indent=2))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
