"""One rule for `--device`: `auto` picks CUDA when torch sees a GPU, else the CPU; a named device that
this machine does not have is one clear error before any model loads, not torch's assertion mid-run."""

from __future__ import annotations


def resolve_device(device: str | None = "auto") -> str:
    """`device` checked against this machine: `auto`/None -> `cuda` or `cpu`; `cuda`, `cuda:N`, `mps`, `cpu`
    as given when present.

    Raises:
        ValueError: a device torch does not know, or one this machine (or this torch build) lacks.
    """
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device}: not a torch device (use auto, cpu, cuda, cuda:N or mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible GPU"
            raise ValueError(f"--device {device}: CUDA is not available here ({build}, torch {torch.__version__}); "
                             "use --device cpu or auto")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible (cuda:0 .. "
                             f"cuda:{torch.cuda.device_count() - 1})")
    elif parsed.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: Apple's MPS is not available here; use --device cpu or auto")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: realness runs on cpu, cuda or mps")
    return device
