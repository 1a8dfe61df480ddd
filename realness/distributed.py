"""`realness run --ray`: the same pipeline on Ray Data, for datasets larger than one machine.

The driver (the process that holds the output folder's lock) decides what is left to do, exactly as the
single-process run does (images whose SHA-256 already has a result are skipped), turns those records into a
Ray Dataset, and streams them through three actor pools, one per model:

    describe  (reads the image, takes the given or cached description or runs the describer)
    -> score  (CORE)
    -> map    (DREAM maps, overlays and thumbnails, written straight into the output folder)

Each actor loads its model once and keeps it. Records come back to the driver as blocks finish and are
appended to `results.jsonl` / `descriptions.jsonl` at once, so a killed driver loses only the blocks in
flight and the rerun resumes. Ray Data restarts an actor whose process died and retries its tasks
(`max_restarts=-1`, `max_task_retries=-1`, Ray Data's defaults for actor pools); a record reaches the
driver only from a finished task, so every image ends once. Per-image failures stay per image.

Outputs are written by the actors: on a cluster `--out` must be a path every node sees (a shared
filesystem). Ray is an optional extra: `pip install 'realness[ray]'`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Iterator

import numpy as np

logger = logging.getLogger(__name__)

STAGES = ("describe", "score", "map")
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


class _Stage:
    """One stage of the pipeline in a Ray actor: its model loads on first use and stays."""

    stage = ""

    def __init__(self, cfg, dream_config, out: str, device: str):
        from pathlib import Path

        from realness.pipeline import Models

        self.cfg, self.dream_config, self.out, self.device = cfg, dream_config, Path(out), device
        self.models = Models(cfg, dream_config, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from realness.pipeline import read_stage

        records = [json.loads(r) for r in batch["record"]]
        described = [json.loads(d) for d in batch["described"]]
        images = read_stage(records, self.cfg, timed=self.stage == "describe")
        self.run(records, images, described)
        # What this actor loaded goes back once per batch, on its first row (not copied onto every record).
        info = [json.dumps({"info": self.models.info, "load_s": self.models.load_s})] + [""] * (len(records) - 1)
        return {"record": np.array([json.dumps(r) for r in records], dtype=object),
                "described": np.array([json.dumps(d) for d in described], dtype=object),
                f"info_{self.stage}": np.array(info, dtype=object),
                **{k: v for k, v in batch.items() if k.startswith("info_")}}


class DescribeStage(_Stage):
    stage = "describe"

    def run(self, records, images, described) -> None:
        from realness.pipeline import describe_stage

        given, cached = {}, {}
        for r in records:  # the driver's known descriptions travel with each record
            text, old = r.pop("_given"), r.pop("_cached")
            if text:
                given[r["filename"]] = text
            if old:
                cached[r["sha256"]] = old
        written: dict[str, list] = defaultdict(list)

        class Collect:
            def write(self, record):
                written[record["sha256"]].append(record)

        describe_stage(records, images, self.cfg, self.models, given, cached, Collect())
        for k, r in enumerate(records):  # the same content twice in one batch: its records go with the first
            described[k] = written.pop(r["sha256"], [])


class ScoreStage(_Stage):
    stage = "score"

    def run(self, records, images, described) -> None:
        from realness.pipeline import score_stage

        score_stage(records, images, self.models)


class MapStage(_Stage):
    stage = "map"

    def run(self, records, images, described) -> None:
        from realness.pipeline import map_stage

        map_stage(records, images, self.cfg, self.dream_config, self.models, self.out)


def run_on_ray(todo: list[dict], cfg, dream_config, out, device: str, given: dict, cached: dict) -> Iterator[tuple]:
    """Stream `(record, description records, models info)` for every record of `todo` as Ray finishes them."""
    if not todo:  # everything is done: no Ray instance to start
        return
    ray = import_ray()
    connect(cfg.ray, cfg.ray_cpus_local or None)
    rows = []
    for rec in todo:
        row = dict(rec, _given=given.get(rec["filename"], ""), _cached=cached.get(rec["sha256"], ""))
        rows.append({"record": json.dumps(row), "described": "[]"})
    ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // cfg.chunk_size)))
    actors = dict(zip(STAGES, cfg.ray_actors))
    gpus = dict(zip(STAGES, cfg.ray_gpus))
    for stage, cls in zip(STAGES, (DescribeStage, ScoreStage, MapStage)):
        ds = ds.map_batches(cls, fn_constructor_args=(cfg, dream_config, str(out), device), batch_size=cfg.chunk_size,
                            compute=ray.data.ActorPoolStrategy(size=actors[stage]), num_gpus=gpus[stage],
                            num_cpus=cfg.ray_cpus_per_actor, batch_format="numpy")
    for row in ds.iter_rows():
        info: dict = {"info": {}, "load_s": {}}
        for stage in STAGES:
            part = json.loads(row.get(f"info_{stage}") or "{}")
            info["info"].update(part.get("info", {}))
            info["load_s"].update(part.get("load_s", {}))
        yield json.loads(row["record"]), json.loads(row["described"]), info


class AnnotateStage:
    """`realness annotate --ray`: one describer engine per actor (the same engine, prompt and adapter as
    direct mode and `realness serve`)."""

    def __init__(self, cfg):
        from describe.annotate import EngineAnnotator

        self.annotator = EngineAnnotator(cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pathlib import Path

        items = [(Path(p), str(s)) for p, s in zip(batch["path"], batch["sha256"])]
        return {"record": np.array([json.dumps(r) for r in self.annotator.records(items)], dtype=object)}


def annotate_on_ray(cfg, todo: list) -> Iterator[dict]:
    """Stream the annotation records of `todo` ((path, sha256) pairs) as Ray's actors finish them."""
    if not todo:
        return
    ray = import_ray()
    connect(cfg.ray)
    rows = [{"path": str(path), "sha256": sha} for path, sha in todo]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // cfg.batch_size)))
    ds = ds.map_batches(AnnotateStage, fn_constructor_args=(cfg,), batch_size=cfg.batch_size,
                        compute=ray.data.ActorPoolStrategy(size=cfg.ray_actors), num_gpus=cfg.ray_gpus,
                        num_cpus=cfg.ray_cpus_per_actor, batch_format="numpy")
    for row in ds.iter_rows():
        yield json.loads(row["record"])
