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
from collections.abc import Iterator

import numpy as np

from realness.cluster import connect, import_ray
from realness.stages import Models, describe_stage, map_stage, read_stage, score_stage

logger = logging.getLogger(__name__)

STAGES = ("describe", "score", "map")
class _Stage:
    """One stage of the pipeline in a Ray actor: its model loads on first use and stays."""

    stage = ""

    def __init__(self, cfg, dream_config, out: str, device: str):
        from pathlib import Path

        self.cfg, self.dream_config, self.out, self.device = cfg, dream_config, Path(out), device
        self.models = Models(cfg, dream_config, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
        score_stage(records, images, self.models)


class MapStage(_Stage):
    stage = "map"

    def run(self, records, images, described) -> None:
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
