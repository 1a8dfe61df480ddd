"""End to end: images -> descriptions -> CORE realness scores -> DREAM maps -> scores.csv and report.html.

`realness run IMAGES --out DIR`. Images are read, described, scored and mapped a chunk at a time
(`--chunk_size`), so a folder of any size needs the memory of one chunk. Every finished image is
appended to `DIR/results.jsonl` (and every new description to `DIR/descriptions.jsonl`) and flushed
at once; rerunning the same command skips images whose file name and content hash already have a
result, reuses descriptions already written, and retries failures. An image that fails at any stage
gets a record naming the stage and the reason; the rest of the batch goes on. The tables and the
report are rebuilt from `results.jsonl` at the end of every run, one row per input image, in input order.

Models: descriptions come from `--descriptions` (ones you already have), then from a describer run
in-process (`--describer`, `--engine`) or behind running servers (`--server`). CORE is `--core`
(default `auto`: the bundled fusion model, or the bundled image-only one when the describer that writes
the descriptions failed its distillation gate; `choose_core`) and DREAM's CLIP is the `DreamConfig` model. When the *default*
describer or CLIP cannot be loaded because there is no network, `--offline_fallback` (default true)
swaps in the bundled offline describer (`describe.small`: real pretrained parts, trained on RAISE-TD,
its measured quality in summary.json and the report) and evidence maps for CLIP (`realness.dream.evidence`:
the bundled artifact map sharpened by detected faces, hands, people and text), each with one warning.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from describe.engines import describer_gate, expected_describer
from realness.cluster import import_ray
from realness.core.modeling import resolve_core
from realness.data import load_descriptions, manifest_inputs
from realness.devices import resolve_device
from realness.distributed import run_on_ray
from realness.dream.configuration import DreamConfig
from realness.evaluation import read_truth
from realness.files import (
    JsonlWriter,
    atomic_path,
    one_writer,
    read_jsonl,
    require_local_folder,
    sha256_file,
    write_text_atomic,
)
from realness.hub import hub_offline_if_unreachable
from realness.images import (
    IMAGE_EXTENSIONS,
    scan_folder,
    skipped_note,
    skipped_reasons,
)
from realness.metrics import correlations
from realness.plots import histogram_plot, scatter_plot
from realness.report import write_report
from realness.stages import (
    STAGES,
    Models,
    RunConfig,
    describe_stage,
    discard_outputs,
    map_stage,
    read_stage,
    record_text,
    score_stage,
)

logger = logging.getLogger(__name__)
SCORE_FIELDS = ("filename", "score_z", "score_mos", "novelty", "warning", "verdict", "description",
                "description_source", "mos", "overlay", "status", "error")


def _inputs(images: str, out: str | None = None) -> tuple[list[Path], dict[str, str], dict[str, float], list[Path]]:
    """Image paths, descriptions and MOS when `images` is a manifest that has them, and the files of a
    folder that were left out for not being images."""
    from collections import Counter


    def unique(paths: list[Path], what: str) -> None:
        dup = next((n for n, k in Counter(p.name for p in paths).items() if k > 1), None)
        if dup:
            raise ValueError(f"{images}: {dup} is listed twice across the {what} (file names key the results)")

    if any(c in images for c in "*?[") and not Path(images).exists():  # "shards/part-*.csv" or "dir/*.png"
        import glob

        shards = sorted(glob.glob(images))
        if not shards:
            raise FileNotFoundError(f"{images}: nothing matches")
        pictures = [Path(s) for s in shards if Path(s).suffix.lower() in IMAGE_EXTENSIONS]
        if pictures and len(pictures) < len(shards):
            raise ValueError(f"{images}: matches both images and other files; match images only, or manifests only")
        if pictures:  # a quoted glob of images: those images, as a folder of them would give
            if out is not None:  # never the run's own pictures
                own = Path(out).resolve()
                pictures = [p for p in pictures if own not in p.resolve().parents]
            unique(pictures, "matched folders")
            return pictures, {}, {}, []
        paths, texts, mos = [], {}, {}
        for shard in shards:
            p, t, m = manifest_inputs(shard)
            paths += p
            texts.update(t)
            mos.update(m)
        unique(paths, "shards")
        return paths, texts, mos, []
    src = Path(images)
    if src.is_dir():
        paths, skipped = scan_folder(src, outputs=out)
        return paths, {}, {}, skipped
    if not src.is_file():
        raise FileNotFoundError(f"{src}: neither a folder of images, an image, nor a manifest file")
    if src.suffix.lower() in IMAGE_EXTENSIONS:  # one image: `realness run photo.png`
        return [src], {}, {}, []
    return (*manifest_inputs(src), [])


def _device(device: str) -> str:
    return resolve_device(device)


def run(cfg: RunConfig, dream_config: DreamConfig | None = None) -> dict:
    """Run the pipeline over `cfg.images` into `cfg.out`; returns the summary (also in summary.json). DREAM's
    options are `cfg.dream_config`; a `dream_config` given here replaces them (the earlier two-argument form).

    Inputs are checked before anything is written; then the output folder is held under its one-writer
    lock (`realness.files.one_writer`) for the whole run: a second run into it fails at once."""

    if not cfg.images:
        raise ValueError("give the images: realness run IMAGES --out DIR")
    if cfg.chunk_size < 1:
        raise ValueError("--chunk_size must be at least 1")
    if cfg.timeout <= 0 or cfg.backoff < 0 or cfg.retries < 0:
        raise ValueError("--timeout must be above 0, --backoff and --retries at least 0")
    if cfg.ray is not None:
        if len(cfg.ray_actors) != 3 or len(cfg.ray_gpus) != 3 or min(cfg.ray_actors) < 1:
            raise ValueError("--ray_actors and --ray_gpus take three values: describe, score, map (actors >= 1)")

        import_ray()  # says how to install Ray, before anything else
    else:
        _device(cfg.device)  # a GPU this machine lacks fails now (on Ray the actors' nodes have their own)
    if dream_config is not None:
        cfg = replace(cfg, dream_config=dream_config)
    dream_config = cfg.dream_config
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")

    if cfg.core != CORE_AUTO:
        resolve_core(cfg.core)  # a missing CORE fails now, not after the describer has run
    if not cfg.server:  # a named local model that is missing fails now, never as a hub id or a fallback
        require_local_folder(cfg.adapter, "--adapter")
        if cfg.describer != "none":
            require_local_folder(cfg.describer, "--describer")

    paths, given, truth, skipped = _inputs(cfg.images, cfg.out)  # bad inputs fail here, before anything is written
    if skipped:
        logger.warning("%s: %s", cfg.images, skipped_note(skipped))
    if not paths:
        raise ValueError(f"{cfg.images}: no images found (extensions read: {' '.join(IMAGE_EXTENSIONS)})")
    if cfg.descriptions:
        given.update(load_descriptions(cfg.descriptions))
    if cfg.truth:
        truth.update(read_truth(cfg.truth))
    out.mkdir(parents=True, exist_ok=True)
    with one_writer(out, "realness run"):  # nothing is written before this: one writer per output folder
        fresh = not (out / "run.json").exists()
        try:
            return _run(cfg, dream_config, out, paths, given, truth, skipped)
        finally:
            # a start that did nothing (a bad option, a model that cannot load) locks in no options
            if fresh and (out / "run.json").exists() and not any(
                    r.get("status") == "ok" for r in read_jsonl(out / "results.jsonl")):
                (out / "run.json").unlink()


def _run(cfg: RunConfig, dream_config: DreamConfig, out: Path, paths, given, truth, skipped) -> dict:
    from tqdm.auto import tqdm

    results_path = out / "results.jsonl"
    if results_path.exists() and not cfg.resume:
        raise ValueError(f"{out} already holds a run: pass --resume true to continue it, or choose another --out")
    for sub in ("maps", "thumbs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    hub_offline_if_unreachable()  # with or without fallback: a missing network fails in a second, not after retries
    core, why = choose_core(cfg, paths, given)
    if why:
        logger.warning("CORE: %s", why)
    cfg = replace(cfg, core=core)  # run.json records the model chosen, so a resumed run scores with the same one
    _check_same_run(out / "run.json", cfg, dream_config)
    done = {r["filename"]: r for r in read_jsonl(results_path)}
    cached = {r["sha256"]: r["description"] for r in read_jsonl(out / "descriptions.jsonl") if r.get("status") == "ok"}
    device = _device(cfg.device)
    models = Models(cfg, dream_config, device)
    if cfg.ray is None:
        # Every model this run needs is loaded (and checked) before the first image is processed. On Ray
        # each stage's actors load their own.
        models.core()
        if cfg.dream:
            models.mapper()
        pending = [p for p in paths if (done.get(p.name) or {}).get("status") != "ok"]
        if cfg.describer != "none" and any(not given.get(p.name, "").strip() for p in pending):
            models.describer()
    results, described = JsonlWriter(results_path), JsonlWriter(out / "descriptions.jsonl")
    bar = tqdm(total=len(paths), desc="realness run", unit="img", disable=not cfg.progress, file=sys.stderr)
    counts = {"processed": 0, "skipped": 0}
    start = time.perf_counter()

    def todo_of(chunk: list[Path]) -> list[dict]:
        todo = []
        for path in chunk:
            try:
                sha = sha256_file(path)
            except OSError:
                sha = ""  # not resumable: its read stage fails it with the reason
            prev = done.get(path.name)
            if prev and prev["status"] == "ok" and prev["sha256"] == sha and sha:
                counts["skipped"] += 1
                bar.update(1)
                continue
            todo.append(_new_record(path, sha, truth.get(path.name)))
        return todo

    def finish(rec: dict) -> None:
        try:
            results.write(rec)
        except OSError as err:  # the run's ledger cannot grow: stop; unrecorded images are redone on rerun
            discard_outputs(rec, out)
            raise OSError(err.errno, f"{err.strerror}; the run stopped: free space (or fix the folder) and "
                                     "rerun the same command to resume", err.filename) from err
        done[rec["filename"]] = rec
        if rec["status"] != "ok":
            logger.warning("%s: %s failed: %s", rec["image"], rec["stage"], rec["error"])
        counts["processed"] += 1
        bar.update(1)

    try:
        if cfg.ray is not None:
            for rec, texts, info in run_on_ray(todo_of(paths), cfg, dream_config, out, device, given, cached):
                for text in texts:
                    if not record_text(described, rec, text):
                        discard_outputs(rec, out)
                models.info.update(info["info"])
                models.load_s.update(info["load_s"])
                finish(rec)
        else:
            for first in range(0, len(paths), cfg.chunk_size):
                todo = todo_of(paths[first:first + cfg.chunk_size])
                _process(todo, cfg, dream_config, models, given, cached, described, out)
                for rec in todo:
                    finish(rec)
    finally:
        bar.close()
        results.close()
        described.close()
        models.close()
    wall = time.perf_counter() - start
    if why and "core" in models.info:
        models.info["core"]["chosen"] = why
    records = [{**done[p.name], "mos": truth.get(p.name)} for p in paths if p.name in done]  # today's --truth
    summary = _summary(records, counts, wall, models, cfg, dream_config, device)
    summary["skipped_files"] = [p.name for p, _ in skipped]
    summary["skipped_reasons"] = skipped_reasons(skipped)
    start = time.perf_counter()
    write_outputs(records, summary, out)
    summary["seconds"]["write_outputs"] = round(time.perf_counter() - start, 3)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


CORE_AUTO = "auto"


def choose_core(cfg: RunConfig, paths: list[Path], given: dict[str, str]) -> tuple[str, str]:
    """`(CORE model, why)` for `--core auto` (any other `--core` is kept, with no reason): the bundled fusion
    model `offline`, but the image-only `offline-image` when the describer writes any of this run's
    descriptions and its distillation gate failed (`describe.engines.describer_gate`): by the gate's own
    numbers, fusion CORE reading that text scores worse than the image alone. One model scores the whole run,
    so images that come with --descriptions are scored from the image alone too; pass --core offline for them."""
    if cfg.core != CORE_AUTO:
        return cfg.core, ""
    if cfg.server or cfg.describer == "none" or all(given.get(p.name, "").strip() for p in paths):
        return "offline", ""

    name = expected_describer(cfg.describer, cfg.offline_fallback and not cfg.adapter)
    gate = describer_gate(name, cfg.adapter)
    if not gate or gate.get("passed") is not False:
        return "offline", ""
    reasons = "; ".join(gate.get("reasons") or []) or "no reason recorded"
    return "offline-image", (f"scoring from the image alone (bundled offline-image): the describer {name} failed "
                             f"its distillation gate ({reasons}), so its text would lower the score's quality; "
                             "pass --core offline to score with the text anyway")


# Options that change results: a resumed run must use the same ones, or its rows would mix two setups.
RESULT_OPTIONS = ("descriptions", "describer", "adapter", "server_model", "core", "dream", "max_tokens", "verdict_guide")


def _check_same_run(path: Path, cfg: RunConfig, dream_config: DreamConfig) -> None:
    """Record the options that shape results in `run.json`; refuse to resume with different ones."""
    from dataclasses import asdict

    wanted = {k: asdict(cfg)[k] for k in RESULT_OPTIONS}
    if cfg.descriptions:
        # its content, not only its path: an edited description must not leave the old text and score in place
        wanted["descriptions"] = str(Path(cfg.descriptions).resolve())
        wanted["descriptions_sha256"] = sha256_file(Path(cfg.descriptions))
    wanted["dream_config"] = dream_config.to_dict() if cfg.dream else None
    wanted = json.loads(json.dumps(wanted))  # as run.json holds it (tuples are lists there)
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in wanted if before.get(k) != wanted[k])
        if changed:
            def differ(k):
                old, new = before.get(k), wanted[k]
                if isinstance(old, dict) and isinstance(new, dict):  # only the options that differ
                    return "; ".join(f"{k}.{sub}: {old.get(sub)!r} then, {new.get(sub)!r} now"
                                     for sub in sorted(set(old) | set(new)) if old.get(sub) != new.get(sub))
                return f"{k}: {old!r} then, {new!r} now"

            diff = "; ".join(differ(k) for k in changed)
            raise ValueError(f"{path.parent} holds a run made with other options ({diff}); "
                             "rerun with the same options to resume, or choose another --out")
    else:
        write_text_atomic(path, json.dumps(wanted, indent=2))


def _new_record(path: Path, sha: str, mos: float | None) -> dict:
    return {"filename": path.name, "image": str(path), "sha256": sha, "status": "ok", "stage": "", "error": "",
            "description": "", "verdict": "", "description_source": "", "contract_ok": None, "score_z": None,
            "score_mos": None, "novelty": None, "warning": "", "mos": mos, "map": "", "overlay": "", "thumb": "", "overlay_thumb": "",
            "map_flat": None, "seconds": {}}


def _process(todo, cfg, dream_config, models: Models, given, cached, described, out: Path) -> None:
    """Run every stage over one chunk, filling in (and failing) each image's record in place."""
    images = read_stage(todo, cfg)
    describe_stage(todo, images, cfg, models, given, cached, described)
    score_stage(todo, images, models)
    map_stage(todo, images, cfg, dream_config, models, out)


def _summary(records, counts, wall, models: Models, cfg, dream_config, device) -> dict:
    """Counts, score statistics, correlations with MOS when known, models used, and wall time per stage."""
    import numpy as np

    ok = [r for r in records if r["status"] == "ok"]
    scored = [r for r in records if r["score_z"] is not None]
    key = "score_mos" if scored and all(r["score_mos"] is not None for r in scored) else "score_z"
    values = np.array([r[key] for r in scored], dtype=float)
    stats = {}
    if len(values):
        stats = {"column": key, "mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                 "median": float(np.median(values)), "max": float(values.max())}
    verdicts = {v: sum(r["verdict"] == v for r in ok) for v in ("yes", "somewhat", "no", "")}
    stage_s = {}
    for stage in STAGES:
        times = [r["seconds"][stage] for r in records if stage in r.get("seconds", {})]
        if times:
            stage_s[stage] = {"images": len(times), "mean_s_per_image": round(float(np.mean(times)), 4)}
    known = [(r[key], r["mos"]) for r in scored if r.get("mos") is not None]
    correlation = None
    if len(known) >= 3:
        c = correlations(*map(np.asarray, zip(*known)))
        correlation = {"n": len(known), "srocc": c["srocc"], "plcc": c["plcc"], "krcc": c["krcc"]}
    return {
        "images": len(records), "ok": len(ok), "failed": {r["filename"]: f"{r['stage']}: {r['error']}"
                                                        for r in records if r["status"] != "ok"},
        "processed_this_run": counts["processed"], "skipped_already_done": counts["skipped"],
        "scores": stats, "verdicts": verdicts, "vs_mos": correlation,
        "models": models.info, "placeholders": sorted(k for k, v in models.info.items() if v.get("placeholder")),
        "device": device, "dream": dream_config.to_dict() if cfg.dream else None,
        "seconds": {"wall_this_run": round(wall, 3), "model_load": models.load_s, "per_stage": stage_s,
                    "end_to_end_s_per_image": round(wall / counts["processed"], 4) if counts["processed"] else None},
    }


def write_outputs(records: list[dict], summary: dict, out: Path) -> None:
    """scores.csv, summary.json, histogram.png, scatter.png (when MOS is known) and report.html."""

    with atomic_path(out / "scores.csv") as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(SCORE_FIELDS)
        for r in records:
            w.writerow(["" if r.get(k) is None else (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k])
                        for k in SCORE_FIELDS])
    plots = {}
    stats = summary["scores"]
    if stats:
        values = [r[stats["column"]] for r in records if r[stats["column"]] is not None]
        plots["histogram"] = histogram_plot(values, out / "histogram.png", stats["column"]).name
    if summary["vs_mos"]:
        known = [(r[stats["column"]], r["mos"]) for r in records if r["score_z"] is not None and r["mos"] is not None]
        pred, mos = zip(*known)
        plots["scatter"] = scatter_plot(pred, mos, out / "scatter.png", "realness run",
                                        xlabel=f"predicted {stats['column']}").name
    summary["plots"] = plots
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_report(records, summary, out / "report.html")
