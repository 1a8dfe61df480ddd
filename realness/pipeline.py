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
from dataclasses import dataclass, field
from pathlib import Path

from describe.engines import DEFAULT_DESCRIBER
from describe.verdict import HELP as GUIDE_HELP
from realness.dream.configuration import DreamConfig
from realness.files import (JsonlWriter, one_writer, output_name, read_jsonl, require_local_folder, save_image,
                            write_text_atomic)
from realness.images import PIXEL_BUDGET, skipped_reasons

logger = logging.getLogger(__name__)
STAGES = ("read", "describe", "score", "map", "thumbnail")
SCORE_FIELDS = ("filename", "score_z", "score_mos", "verdict", "description", "description_source", "mos",
                "overlay", "status", "error")


@dataclass
class RunConfig:
    """Options of `realness run` (DREAM's options come from `DreamConfig`)."""

    images: str | None = field(default=None, metadata={"help": "Folder of images, one image file, a manifest CSV/JSONL/JSON with an image column (optional mos, description), or a quoted glob of images ('dir/*.png') or of manifest shards ('shards/part-*.csv'); also the first positional argument.", "positional": True})
    out: str = field(default="realness-run", metadata={"help": "Output folder: scores.csv, descriptions.jsonl, maps/, report.html, summary.json."})
    descriptions: str | None = field(default=None, metadata={"help": "Descriptions you already have (CSV/JSONL with filename,description); the describer writes only the missing ones."})
    describer: str = field(default=DEFAULT_DESCRIBER, metadata={"help": "Describer VLM id or folder, 'offline/small-describer' for the bundled offline describer, 'tiny-qwen2vl' for the random test model, or 'none' to use only --descriptions."})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder for the describer (from train-describer)."})
    engine: str = field(default="auto", metadata={"help": "Describer engine: transformers, vllm, or auto (vllm on a GPU when installed, else transformers)."})
    server: list[str] = field(default_factory=list, metadata={"help": "Running OpenAI-compatible describer server URL(s) to use instead of loading the describer."})
    server_model: str = field(default="describer", metadata={"help": "Model name sent to --server (an adapter name or the base)."})
    api_key: str | None = field(default=None, metadata={"help": "Bearer token for --server."})
    core: str = field(default="auto", metadata={"help": "CORE model folder, or a bundled one: 'offline' (image + description), 'offline-image' (image alone), or 'auto': 'offline', but 'offline-image' when the describer writes descriptions for this run and its distillation gate says its text does not help CORE (the bundled offline describer's does), with one warning."})
    dream: bool = field(default=True, metadata={"help": "Draw DREAM realness maps."})
    truth: str | None = field(default=None, metadata={"help": "Human scores (RAISE ratings.csv or a manifest with image,mos) for correlations and a scatter plot."})
    offline_fallback: bool = field(default=True, metadata={"help": "If the default describer or CLIP cannot be downloaded, use the bundled offline describer (offline/small-describer) and evidence maps (artifact map + detected regions, DreamConfig --source auto) instead of stopping."})
    chunk_size: int = field(default=16, metadata={"help": "Images read, described, scored and mapped together; bounds memory."})
    describe_batch: int = field(default=8, metadata={"help": "Images per describer generate call (transformers engine)."})
    max_tokens: int = field(default=64, metadata={"help": "Description length cap in tokens."})
    verdict_guide: str = field(default="auto", metadata={"help": GUIDE_HELP})
    num_workers: int | None = field(default=None, metadata={"help": "DataLoader workers that resize and tokenise CORE's inputs while it scores; 0: in this process. Default: on a GPU one per CPU core beyond the driving one (at most 8), on a CPU none (the model's threads use every core)."})
    concurrency: int = field(default=4, metadata={"help": "Requests in flight per --server."})
    retries: int = field(default=5, metadata={"help": "Retries per image on --server 429/5xx/connection errors and timeouts."})
    timeout: float = field(default=120.0, metadata={"help": "Seconds per --server request before it counts as failed (and is retried)."})
    backoff: float = field(default=1.0, metadata={"help": "First --server retry delay in seconds; doubles each retry."})
    device: str = field(default="auto", metadata={"help": "Torch device for the describer, CORE and DREAM: auto (cuda when available), cpu, cuda."})
    resume: bool = field(default=True, metadata={"help": "Continue a run in --out: skip images already done, retry failed ones."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    thumb_size: int = field(default=256, metadata={"help": "Longer side in pixels of the report's thumbnails."})
    overlay_size: int = field(default=1024, metadata={"help": "Longer side in pixels of the overlay PNGs in maps/ (the .npz holds the map at DREAM's --map_long_side)."})
    max_pixels: int = field(default=PIXEL_BUDGET, metadata={"help": "Images with more pixels are downscaled once on read (aspect kept) for every stage; bounds memory. 0: never."})
    ray: str | None = field(default=None, metadata={"help": "Run on Ray Data: --ray alone starts a private Ray instance on this machine, every process listening on 127.0.0.1 only; --ray ADDRESS joins a cluster (auto, ray://head:10001). Put it after IMAGES. Needs pip install 'realness[ray]'.", "const": "local"})
    ray_actors: list[int] = field(default_factory=lambda: [1, 1, 1], metadata={"help": "With --ray: actors of the describe, score (CORE) and map (DREAM) stages; each loads its model once."})
    ray_gpus: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0], metadata={"help": "With --ray: GPUs per actor of the describe, score and map stages (fractions share a GPU, e.g. 1 0.25 0.25)."})
    ray_cpus_per_actor: float = field(default=1.0, metadata={"help": "With --ray: CPUs each actor reserves."})
    ray_cpus_local: int = field(default=0, metadata={"help": "With --ray alone: CPUs of the Ray instance started here (0: all)."})


def hub_offline_if_unreachable(timeout: float = 3.0) -> bool:
    """Switch the Hugging Face hub to offline mode for this process when its host cannot be reached.

    Without this, every default model the run tries on a machine with no network costs about 45 s of
    huggingface_hub retries before it fails; offline mode fails at once (and still loads cached models).
    Returns True when offline.
    """
    import os
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return True
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # behind a proxy a direct connection proves nothing; let the hub client try
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return False
    except OSError as err:
        logger.info("%s unreachable (%s): hub offline mode, models come from the local cache only", host, err)
        os.environ["HF_HUB_OFFLINE"] = "1"
        hub.HF_HUB_OFFLINE = True
        return True


class Models:
    """Loads each model on first use and remembers what was loaded (and whether it is a placeholder)."""

    def __init__(self, cfg: RunConfig, dream_config: DreamConfig, device: str):
        self.cfg, self.dream_config, self.device = cfg, dream_config, device
        self.info: dict[str, dict] = {}
        self.load_s: dict[str, float] = {}
        self._describer = self._core = self._mapper = None

    def _timed(self, key: str, fn):
        start = time.perf_counter()
        value = fn()
        self.load_s[key] = round(time.perf_counter() - start, 3)
        return value

    def core(self):
        if self._core is None:
            from realness.core import CoreModel

            self._core = self._timed("core", lambda: CoreModel.from_pretrained(self.cfg.core, device=self.device))
            c = self._core.config
            self.info["core"] = {"name": self.cfg.core, "mode": c.mode, "image_backbone": c.image_backbone,
                                 "text_encoder": c.text_encoder, "mos_scale": c.mos_mean is not None, "placeholder": False}
        return self._core

    def mapper(self):
        if self._mapper is None:
            self._mapper = self._timed("maps", self._load_mapper)
        return self._mapper

    def _load_mapper(self):
        from realness.dream.run import load_mapper

        mapper, self.info["maps"] = load_mapper(self.dream_config, self.device, self.cfg.offline_fallback)
        return mapper

    def describer(self):
        """An engine with `.generate(images, batch_size)`, or a server client with `.describe(path)`."""
        if self._describer is None:
            self._describer = self._timed("describer", self._load_describer)
        return self._describer

    def _load_describer(self):
        cfg = self.cfg
        if cfg.server:
            from describe.annotate import AnnotateConfig, ServerClient

            self.info["describer"] = {"name": cfg.server_model, "server": cfg.server, "placeholder": False}
            return ServerClient(AnnotateConfig(server=cfg.server, model=cfg.server_model, api_key=cfg.api_key,
                                               max_tokens=cfg.max_tokens, concurrency=cfg.concurrency,
                                               retries=cfg.retries, timeout=cfg.timeout, backoff=cfg.backoff))
        if cfg.describer == "none":
            raise ValueError("no description for this image and --describer none")
        from describe.engines import load_describer

        engine, self.info["describer"] = load_describer(cfg.engine, cfg.describer, cfg.adapter, cfg.offline_fallback,
                                                        self.device, max_new_tokens=cfg.max_tokens,
                                                        verdict_guide=cfg.verdict_guide)
        return engine

    def close(self) -> None:
        for model in (self._describer, self._mapper):
            if model is not None and hasattr(model, "close"):
                model.close()


def _inputs(images: str, out: str | None = None) -> tuple[list[Path], dict[str, str], dict[str, float], list[Path]]:
    """Image paths, descriptions and MOS when `images` is a manifest that has them, and the files of a
    folder that were left out for not being images."""
    from collections import Counter

    from realness.data import manifest_inputs
    from realness.images import IMAGE_EXTENSIONS, scan_folder

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
    from realness.devices import resolve_device

    return resolve_device(device)


def run(cfg: RunConfig, dream_config: DreamConfig | None = None) -> dict:
    """Run the pipeline over `cfg.images` into `cfg.out`; returns the summary (also in summary.json).

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
        from realness.distributed import import_ray

        import_ray()  # says how to install Ray, before anything else
    else:
        _device(cfg.device)  # a GPU this machine lacks fails now (on Ray the actors' nodes have their own)
    dream_config = dream_config or DreamConfig()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    from realness.core.modeling import resolve_core

    if cfg.core != CORE_AUTO:
        resolve_core(cfg.core)  # a missing CORE fails now, not after the describer has run
    if not cfg.server:  # a named local model that is missing fails now, never as a hub id or a fallback
        require_local_folder(cfg.adapter, "--adapter")
        if cfg.describer != "none":
            require_local_folder(cfg.describer, "--describer")
    from realness.images import IMAGE_EXTENSIONS, skipped_note

    paths, given, truth, skipped = _inputs(cfg.images, cfg.out)  # bad inputs fail here, before anything is written
    if skipped:
        logger.warning("%s: %s", cfg.images, skipped_note(skipped))
    if not paths:
        raise ValueError(f"{cfg.images}: no images found (extensions read: {' '.join(IMAGE_EXTENSIONS)})")
    if cfg.descriptions:
        from realness.data import load_descriptions

        given.update(load_descriptions(cfg.descriptions))
    if cfg.truth:
        from realness.evaluation import read_truth

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

    from describe.annotate import sha256_file

    results_path = out / "results.jsonl"
    if results_path.exists() and not cfg.resume:
        raise ValueError(f"{out} already holds a run: pass --resume true to continue it, or choose another --out")
    for sub in ("maps", "thumbs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    hub_offline_if_unreachable()  # with or without fallback: a missing network fails in a second, not after retries
    from dataclasses import replace

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
            from realness.distributed import run_on_ray

            for rec, texts, info in run_on_ray(todo_of(paths), cfg, dream_config, out, device, given, cached):
                for text in texts:
                    if not _record_text(described, rec, text):
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
    from describe.engines import describer_gate, expected_describer

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
        from describe.annotate import sha256_file

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
            "score_mos": None, "mos": mos, "map": "", "overlay": "", "thumb": "", "overlay_thumb": "",
            "map_flat": None, "seconds": {}}


def _fail(rec: dict, stage: str, err: Exception | str) -> None:
    rec.update(status="failed", stage=stage, error=str(err) if str(err) else type(err).__name__)


def _split_time(recs: list[dict], stage: str, start: float) -> None:
    """Charge a stage's wall time to the images it processed, evenly."""
    if recs:
        share = (time.perf_counter() - start) / len(recs)
        for r in recs:
            r["seconds"][stage] = round(share, 4)


def _process(todo, cfg, dream_config, models: Models, given, cached, described, out: Path) -> None:
    """Run every stage over one chunk, filling in (and failing) each image's record in place."""
    images = read_stage(todo, cfg)
    describe_stage(todo, images, cfg, models, given, cached, described)
    score_stage(todo, images, models)
    map_stage(todo, images, cfg, dream_config, models, out)


def read_stage(todo: list[dict], cfg: RunConfig, timed: bool = True) -> dict[int, object]:
    """The images of the records still ok, by index; an unreadable one fails its record (stage `read`).
    Stages on other workers (`realness.distributed`) read again with `timed=False`."""
    from realness.images import ImageError, load_image

    images: dict[int, object] = {}
    start = time.perf_counter()
    for i, rec in enumerate(todo):
        if rec["status"] != "ok" and rec.get("stage") == "read":  # a re-read would fail again
            continue
        try:
            images[i] = load_image(rec["image"], cfg.max_pixels or None)
        except ImageError as err:
            _fail(rec, "read", err)
    if timed:
        _split_time(todo, "read", start)
    return images


def describe_stage(todo, images, cfg, models: Models, given, cached, described) -> None:
    """Descriptions: the user's, then ones written by an earlier run, then the describer; each text used is
    written to `described` (anything with `.write(record)`)."""
    from describe.annotate import description_record
    from describe.prompt import parse_answer

    need = []
    for i in images:
        rec = todo[i]
        if given.get(rec["filename"], "").strip():
            rec.update(description=given[rec["filename"]].strip(), description_source="given")
            if cached.get(rec["sha256"]) != rec["description"]:  # descriptions.jsonl lists every text used
                if _record_text(described, rec, description_record(Path(rec["image"]), rec["sha256"],
                                                                   rec["description"], source="given")):
                    cached[rec["sha256"]] = rec["description"]
        elif rec["sha256"] in cached:
            rec.update(description=cached[rec["sha256"]], description_source="cached")
        else:
            need.append(i)
    if need:
        try:
            describer = models.describer()
        except ValueError as err:  # --describer none
            describer = None
            for i in need:
                _fail(todo[i], "describe", err)
        if describer is not None:
            start = time.perf_counter()
            texts = _describe(describer, [todo[i] for i in need], [images[i] for i in need], cfg)
            _split_time([todo[i] for i in need], "describe", start)
            source = "server" if cfg.server else "describer"
            for i, text in zip(need, texts):
                rec = todo[i]
                err = text if isinstance(text, Exception) else None
                written = _record_text(described, rec, description_record(
                    Path(rec["image"]), rec["sha256"], None if err else text, str(err or ""),
                    model=models.info["describer"]["name"], source=source))
                if not written:
                    continue
                if err:
                    _fail(rec, "describe", err)
                elif not text.strip():
                    _fail(rec, "describe", "the describer returned an empty description")
                else:
                    rec.update(description=text.strip(), description_source=source)
                    cached[rec["sha256"]] = rec["description"]
    for i in images:
        if todo[i]["status"] == "ok":
            answer = parse_answer(todo[i]["description"])
            todo[i].update(verdict=answer.verdict, contract_ok=answer.ok)


def _record_text(described, rec: dict, record: dict) -> bool:
    """Append a description record; a write that fails (a full disk) fails the image at stage `write`."""
    try:
        described.write(record)
        return True
    except OSError as err:
        _fail(rec, "write", f"cannot write {err.filename or 'descriptions.jsonl'}: {err.strerror or err}")
        return False


def score_stage(todo, images, models: Models) -> None:
    ok = [i for i in images if todo[i]["status"] == "ok"]
    _per_image(ok, todo, "score", lambda idx: _score(models, [images[i] for i in idx], [todo[i] for i in idx]))


def map_stage(todo, images, cfg, dream_config, models: Models, out: Path) -> None:
    """DREAM maps for the records still ok, then a thumbnail for every image that was read."""
    if cfg.dream:
        ok = [i for i in images if todo[i]["status"] == "ok"]
        _per_image(ok, todo, "map", lambda idx: _map(models, [images[i] for i in idx], [todo[i] for i in idx],
                                                      dream_config, cfg, out))
    for i, image in images.items():  # per image, like every stage: a full disk fails the image, not the run
        start = time.perf_counter()
        if todo[i]["stage"] == "write":  # already failed writing: no more of its files
            continue
        try:
            _thumb(image, todo[i], cfg, out)
        except OSError as err:
            _write_failed(todo[i], err, out)
        _split_time([todo[i]], "thumbnail", start)


def _per_image(idx: list[int], todo: list[dict], stage: str, fn) -> None:
    """Run `fn` on the whole batch; if it fails, run it image by image so one bad input fails alone."""
    if not idx:
        return
    start = time.perf_counter()
    try:
        fn(idx)
        _split_time([todo[i] for i in idx], stage, start)
        return
    except Exception as err:  # noqa: BLE001 - isolate the culprit below
        if len(idx) == 1:
            _fail(todo[idx[0]], stage, err)
            return
    for i in idx:
        start = time.perf_counter()
        try:
            fn([i])
        except Exception as err:  # noqa: BLE001 - one image's failure is recorded, the rest go on
            _fail(todo[i], stage, err)
        _split_time([todo[i]], stage, start)


def _describe(describer, recs: list[dict], images: list, cfg: RunConfig) -> list:
    """Texts in order; an Exception in place of the text for each image that failed."""
    if hasattr(describer, "generate"):
        try:
            return describer.generate(images, cfg.describe_batch)
        except Exception as err:  # noqa: BLE001 - the engine failing on this chunk fails its images
            return [RuntimeError(f"describer failed: {err}")] * len(images)
    from concurrent.futures import ThreadPoolExecutor

    def one(rec):
        try:
            return describer.describe(Path(rec["image"]))[0]
        except Exception as err:  # noqa: BLE001
            return err

    with ThreadPoolExecutor(max_workers=max(1, cfg.concurrency * len(cfg.server))) as pool:
        return list(pool.map(one, recs))


def _score(models: Models, images: list, recs: list[dict]) -> None:
    from realness.core.loading import default_num_workers
    from realness.scoring import default_batch_size

    core = models.core()
    batch = default_batch_size(models.device)
    workers = models.cfg.num_workers if models.cfg.num_workers is not None else default_num_workers(models.device)
    z = core.predict(images if core.config.uses_image else None,
                     [r["description"] for r in recs] if core.config.uses_text else None,
                     batch_size=batch, num_workers=min(workers, len(images) // batch))
    for rec, value in zip(recs, z.tolist()):
        mos = core.to_mos(value)
        rec.update(score_z=float(value), score_mos=None if mos is None else float(mos))


OUTPUT_KEYS = ("map", "overlay", "overlay_thumb", "thumb")


def discard_outputs(rec: dict, out: Path) -> None:
    """Remove the files a failed image got before it failed, so a full disk is not kept full by images that
    will be redone anyway (the rerun writes them again)."""
    for key in OUTPUT_KEYS:
        if rec.get(key):
            (out / rec[key]).unlink(missing_ok=True)
            rec[key] = ""


def _write_failed(rec: dict, err: OSError, out: Path) -> None:
    discard_outputs(rec, out)
    _fail(rec, "write", f"cannot write {err.filename or 'an output'}: {err.strerror or err}")


def _map(models: Models, images: list, recs: list[dict], config: DreamConfig, cfg: RunConfig, out: Path) -> None:
    mapper = models.mapper()
    for image, rec, rmap in zip(images, recs, mapper.map_batch(images, [r["description"] for r in recs])):
        name = output_name(rec["filename"])
        rec.update(map=f"maps/{name}.npz", overlay=f"maps/{name}.overlay.png", overlay_thumb=f"thumbs/{name}.overlay.jpg")
        try:  # a write that fails (a full disk) fails this image alone, and keeps none of its files
            rmap.save(out / rec["map"])
            overlay = rmap.overlay(image, config.colormap, config.alpha, max_side=cfg.overlay_size)
            save_image(overlay, out / rec["overlay"])
            _save_thumbnail(overlay, out / rec["overlay_thumb"], cfg.thumb_size)
        except OSError as err:
            _write_failed(rec, err, out)
            continue
        rec.update(map_flat=bool(rmap.flat), map_source=rmap.source, regions=rmap.regions, map_note=rmap.note)


def _thumb(image, rec: dict, cfg: RunConfig, out: Path) -> None:
    rec["thumb"] = f"thumbs/{output_name(rec['filename'])}.jpg"
    _save_thumbnail(image, out / rec["thumb"], cfg.thumb_size)


def _save_thumbnail(image, path: Path, size: int) -> None:
    """A JPEG of `image` with its longer side at most `size` (the image itself is left as it is)."""
    from PIL import Image

    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    save_image(thumb.convert("RGB"), path, quality=85)


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
        from realness.metrics import correlations

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
    from realness.plots import histogram_plot
    from realness.report import write_report

    from realness.files import atomic_path

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
        from realness.plots import scatter_plot

        known = [(r[stats["column"]], r["mos"]) for r in records if r["score_z"] is not None and r["mos"] is not None]
        pred, mos = zip(*known)
        plots["scatter"] = scatter_plot(pred, mos, out / "scatter.png", "realness run",
                                        xlabel=f"predicted {stats['column']}").name
    summary["plots"] = plots
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_report(records, summary, out / "report.html")
