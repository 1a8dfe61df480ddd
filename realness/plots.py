"""Pictures of results: predicted-vs-MOS scatter plots and score histograms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from realness.files import atomic_path
from realness.metrics import correlations, fit_logistic


def scatter_plot(
    pred: Sequence[float],
    mos: Sequence[float],
    path: str | Path,
    title: str = "",
    xlabel: str = "predicted score",
    ylabel: str = "MOS",
) -> Path:
    """Scatter of predictions against opinion scores with the fitted logistic curve; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, m = np.asarray(pred, dtype=float), np.asarray(mos, dtype=float)
    stats = correlations(p, m)
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    ax.scatter(p, m, s=12, alpha=0.6, edgecolors="none")
    order = np.argsort(p)
    ax.plot(p[order], fit_logistic(p, m)[order], color="crimson", lw=1.5, label="5-parameter logistic fit")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\nSROCC {stats['srocc']:.3f}  PLCC {stats['plcc']:.3f}  n={len(p)}".strip())
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def histogram_plot(values: Sequence[float], path: str | Path, column: str = "score_mos") -> Path:
    """A histogram of predicted scores, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=120)
    ax.hist(v, bins=min(30, max(5, len(v) // 3)), color="#4a7bb7", edgecolor="white")
    ax.axvline(float(np.median(v)), color="crimson", lw=1.5, label=f"median {np.median(v):.2f}")
    ax.set_xlabel("predicted realness (0-100 MOS scale)" if column == "score_mos" else "predicted realness (z-score)")
    ax.set_ylabel("images")
    ax.set_title(f"{len(v)} images")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path
