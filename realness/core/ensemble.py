"""One CORE model from several that share their backbones: every head kept, the score their mean.

Runs with different seeds (each its own selection split, batch order and initialisation) make different
heads on the same frozen features; averaging them is a cheap, reliable gain (README, "CORE variants").
Shipping them as one model costs one backbone pass: `merge_cores` folds each model's MOS scale and
feature standardisation into its heads' linear layers, so the merged model predicts exactly the mean
of the models' MOS predictions (before clipping to the scale's range).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from realness.core.modeling import CoreHead, CoreModel

# What may differ between the models merged: the MOS scale their z-scores are on, and the head's layout.
_PER_MODEL = ("mos_mean", "mos_std", "n_heads", "standardize_features")


def merge_cores(models: list[CoreModel]) -> CoreModel:
    """The heads of `models` in one model, scoring their mean on the MOS scale.

    The models must agree on everything upstream of the head (config, and the weights of any backbone
    or adapter that trained); `ValueError` says what differs.
    """
    if not models:
        raise ValueError("merge_cores needs at least one model")
    configs = [replace(m.config, **{k: None for k in ("mos_mean", "mos_std")}, n_heads=1, standardize_features=False)
               for m in models]
    for i, c in enumerate(configs[1:], 1):
        if c != configs[0]:
            diff = [k for k in c.to_dict() if c.to_dict()[k] != configs[0].to_dict()[k]]
            raise ValueError(f"model {i} differs from model 0 in {diff}; only {', '.join(_PER_MODEL)} may differ")
    first = models[0].state_dict()
    for i, m in enumerate(models[1:], 1):
        for k, v in m.state_dict().items():
            if not k.startswith("head.") and not torch.equal(v.cpu(), first[k].cpu()):
                raise ValueError(f"model {i} has other weights than model 0 in {k}: their heads read different features")
    if any(m.config.mos_mean is None or m.config.mos_std is None for m in models):
        raise ValueError("every merged model needs its MOS scale (mos_mean, mos_std), set by training")
    mean = sum(m.config.mos_mean for m in models) / len(models)
    std = sum(m.config.mos_std for m in models) / len(models)
    members = []
    for m in models:
        for member in m.head.members:
            members.append(_folded(member, m.head, m.config.mos_mean, m.config.mos_std, mean, std))
    config = replace(models[0].config, mos_mean=mean, mos_std=std, n_heads=len(members), standardize_features=False)
    merged = copy.deepcopy(models[0])
    merged.config = merged.processor.config = config
    merged.head = CoreHead(models[0].head.in_features, config.head_hidden, config.dropout, len(members))
    merged.head.members = torch.nn.ModuleList(members)
    return merged.to(next(models[0].parameters()).device).eval()


@torch.no_grad()
def _folded(member: torch.nn.Sequential, head: CoreHead, mos_mean: float, mos_std: float,
            to_mean: float, to_std: float) -> torch.nn.Sequential:
    """A copy of one head member reading raw features and writing z-scores of the (to_mean, to_std) scale."""
    out = copy.deepcopy(member)
    first, last = out[1], out[-1]  # the same layer in a linear head: both folds compose
    if head.standardize:  # W (x - mu) / sd + b  ==  (W / sd) x + (b - (W / sd) mu)
        first.weight.div_(head.feature_std)
        first.bias.sub_(first.weight @ head.feature_mean)
    scale = mos_std / to_std  # z * std + mean == to_mean + to_std * z'
    last.weight.mul_(scale)
    last.bias.mul_(scale).add_((mos_mean - to_mean) / to_std)
    return out
