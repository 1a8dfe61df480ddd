"""Joining a Ray cluster, or starting a private one on this machine that listens on 127.0.0.1 only.
Ray is an optional extra: `pip install 'realness[ray]'`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

INSTALL = "realness run --ray needs Ray Data: pip install 'realness[ray]' (or pip install 'ray[data]')"


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError(INSTALL) from err
    return ray


def connect(address: str, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (`auto`: the one `ray start` made on this machine, or $RAY_ADDRESS),
    or with `local` start a private one on this machine, bound to 127.0.0.1."""
    import os

    ray = import_ray()
    if ray.is_initialized():
        return
    # Quiet unless the CLI runs with --verbose (root logger at INFO): Ray's own INFO lines and its C++
    # workers' benign error lines would otherwise fill the console.
    quiet = logging.getLogger().getEffectiveLevel() >= logging.WARNING
    if quiet:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    kwargs = {"log_to_driver": not quiet, "include_dashboard": False,
              "logging_level": logging.ERROR if quiet else logging.INFO}
    if address == "local":
        _loopback_only(ray)
        ray.init(num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1", **kwargs)
    else:
        ray.init(address=address, **kwargs)
    ray.data.DataContext.get_current().enable_progress_bars = False
    if quiet:
        logging.getLogger("ray.data").setLevel(logging.ERROR)


def _loopback_only(ray) -> None:
    """Make a local Ray instance listen on 127.0.0.1 only. Ray resolves a node address of 127.0.0.1 to the
    machine's reachable IP, and its GCS, raylet and workers bind their gRPC servers for that address on
    every interface; only with clusters switched off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read by Ray at
    import and by the processes it starts) does it keep the loopback address, and every server binds to it."""
    import os

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_NODE_IP_ADDRESS"] = "127.0.0.1"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False  # already read if Ray was imported before


@dataclass
class RayOptions:
    """Where to run on Ray, shared by `realness run --ray` and `realness annotate --ray`."""

    ray: str | None = field(default=None, metadata={
        "help": "Run on Ray Data: --ray alone starts a private Ray instance on this machine, every process listening "
                "on 127.0.0.1 only; --ray ADDRESS joins a cluster (auto, ray://head:10001). Put it after the "
                "positional IMAGES. Needs pip install 'realness[ray]'.", "const": "local"})
    ray_cpus_per_actor: float = field(default=1.0, metadata={"help": "With --ray: CPUs each actor reserves."})

