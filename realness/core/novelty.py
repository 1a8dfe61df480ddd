"""Novelty: how unlike the images a model learned from an image is, so a score can say when it cannot be trusted.

The measure is the distance from the image's features to its nearest training image, as a percentile of the training
images' own leave-one-out nearest-neighbour distances. It is validated by `eval/eval_generalization.py` (fitted on
one rated set: how well it tells another set's images apart, and whether the error grows with it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    std = x.std(0)
    return mean, np.where(std > 1e-6, std, 1.0)


class Novelty(nn.Module):
    """How unlike the training images an image is: the distance from its features to the nearest training image,
    as a percentile of the training images' own leave-one-out nearest-neighbour distances (0-100; 50 is a
    typical training image, above `warn_at` (95) fewer than 5 % of the training images are as far from the rest).

    The features are standardised by the training rows and projected on their top principal components
    (`components`, default 64), so the bank shipped with a model is small (N x 64 float32).
    """

    def __init__(self, n: int = 1, width: int = 1, components: int = 64, warn_at: float = 95.0):
        super().__init__()
        k = min(components, width)
        self.warn_at = warn_at
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.register_buffer("basis", torch.zeros(width, k))
        self.register_buffer("bank", torch.zeros(n, k))
        self.register_buffer("reference", torch.zeros(n))  # sorted leave-one-out distances of the bank

    @classmethod
    def fit(cls, features: np.ndarray, components: int = 64, warn_at: float = 95.0) -> Novelty:
        x = np.asarray(features, dtype=np.float64)
        mean, std = _standardise(x)
        z = (x - mean) / std
        k = min(components, *z.shape)
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        basis = vt[:k].T
        bank = z @ basis
        module = cls(len(x), x.shape[1], k, warn_at)
        module.mean.copy_(torch.as_tensor(mean)), module.std.copy_(torch.as_tensor(std))
        module.basis.copy_(torch.as_tensor(basis)), module.bank.copy_(torch.as_tensor(bank))
        module.reference.copy_(torch.sort(module._nearest(module.bank, leave_one_out=True)).values)
        return module

    def _nearest(self, projected: torch.Tensor, leave_one_out: bool = False) -> torch.Tensor:
        out = []
        for i in range(0, len(projected), 512):
            d = torch.cdist(projected[i:i + 512].float(), self.bank.float())
            if leave_one_out:
                d[torch.arange(len(d)), torch.arange(i, i + len(d))] = float("inf")
            out.append(d.min(1).values)
        return torch.cat(out) if out else torch.empty(0)

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour distance of each row of `features` (B, D), or (B, V, D) for views (averaged)."""
        features = torch.as_tensor(features, dtype=torch.float32)
        if features.dim() == 3:
            features = features.mean(1)
        projected = ((features - self.mean) / self.std) @ self.basis
        return self._nearest(projected)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Percentile 0-100 of each image's distance among the training images' own."""
        d = self.distance(features)
        return 100.0 * torch.searchsorted(self.reference.contiguous(), d.contiguous(), right=True).float() / len(self.reference)
