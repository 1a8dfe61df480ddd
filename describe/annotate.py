"""Annotate a folder or dataset of images with descriptions, resumably, through servers or an engine.

Server mode talks OpenAI chat-completions (images as base64 data URLs) to one or more URLs: vLLM
servers started by `realness serve`, or any OpenAI-compatible endpoint (e.g. GPT-4.1 for reference
descriptions). Requests are bounded (`--concurrency` per server), time out, and are retried with
exponential backoff on 429, 5xx and connection errors, moving to the next server each time. Every
result is appended to a JSONL file and flushed the moment it arrives, so a kill loses only the requests
in flight; `--resume` (default) skips images whose *content hash* already has a result. Direct mode
(`--engine vllm|transformers`) runs the model in-process and writes the same records.

The JSONL reads directly as a descriptions file for CORE and DREAM (`filename`, `description`).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import random
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from describe.chat import prompt_parts
from describe.engines import DEFAULT_DESCRIBER, load_describer
from describe.grounding import TakesRegions
from describe.prompt import DEFAULT_QUESTION, DEFAULT_SYSTEM, REGIONS_FILE, RegionPrompt, saved_region_prompt
from describe.verdict import HELP as GUIDE_HELP
from realness.answers import parse_answer
from realness.boxes import drop_open_box
from realness.cluster import RayOptions, connect, import_ray
from realness.data import manifest_inputs
from realness.files import JsonlWriter, one_writer, read_jsonl, require_local_folder, sha256_file
from realness.images import ImageError, load_image, scan_folder, skipped_note

logger = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class ServerOptions:
    """How to reach OpenAI-compatible describer servers, shared by `realness run --server` and `realness annotate`."""

    server: list[str] = field(default_factory=list, metadata={
        "help": "OpenAI-compatible describer server URL(s), e.g. http://127.0.0.1:8000 (`realness serve`); several "
                "are used round-robin."})
    api_key: str | None = field(default=None, metadata={"help": "Bearer token for the server(s)."})
    concurrency: int = field(default=4, metadata={"help": "Requests in flight per server."})
    timeout: float = field(default=120.0, metadata={"help": "Seconds per request before it counts as failed (and is "
                                                            "retried)."})
    retries: int = field(default=5, metadata={"help": "Retries per image on 429/5xx/connection errors, timeouts and "
                                                      "empty answers."})
    backoff: float = field(default=1.0, metadata={"help": "First retry delay in seconds; doubles each retry."})
    server_regions: str | None = field(default=None, metadata={
        "help": "The served adapter's folder (or its regions.json) when it was trained with regions: stage 1 runs "
                "here and each request carries the image's regions and zoomed crops as in training. Default: plain "
                "prompts."})

    def region_prompt(self) -> RegionPrompt | None:
        """The served describer's `RegionPrompt` (`--server_regions`), or None."""
        if not self.server_regions:
            return None
        path = Path(self.server_regions)
        found = saved_region_prompt(path.parent if path.is_file() else path)
        if found is None:
            raise ValueError(f"--server_regions {self.server_regions}: no {REGIONS_FILE} there")
        return found


@dataclass
class AnnotateConfig(RayOptions, ServerOptions):
    """Options of `realness annotate`."""

    images: str | None = field(default=None, metadata={"help": "Folder of images to annotate."})
    dataset: str | None = field(default=None, metadata={"help": "Or a manifest CSV/JSONL with an image column."})
    out: str = field(default="descriptions.jsonl", metadata={"help": "Append-only JSONL of results."})
    model: str = field(default="describer", metadata={
        "flag": "server_model", "aliases": ("model",), "alias_also": ("describer",),
        "help": "Model name sent to the server: an adapter name registered with `realness serve --lora`, or the "
                "base."})
    describer: str | None = field(default=None, metadata={"help": "Direct mode: the describer VLM id or folder (none: "
                                                                  "the default Qwen2.5-VL-3B; offline the bundled "
                                                                  "offline/small-describer)."})
    engine: str | None = field(default=None, metadata={"help": "Direct mode instead of servers: vllm or transformers."})
    adapter: str | None = field(default=None, metadata={"help": "Direct mode: LoRA adapter folder."})
    question: str = field(default=DEFAULT_QUESTION, metadata={"help": "The user prompt (default: the RAISE-TD "
                                                                      "question)."})
    system: str = field(default=DEFAULT_SYSTEM, metadata={"help": "System prompt ('' for none)."})
    max_tokens: int = field(default=64, metadata={"help": "Answer length cap in tokens."})
    verdict_guide: str = field(default="auto", metadata={"help": "Direct mode: " + GUIDE_HELP})
    batch_size: int = field(default=8, metadata={"help": "Direct mode: images per engine call."})
    resume: bool = field(default=True, metadata={"help": "Skip images whose content hash already has a result in --out."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    ray_actors: int = field(default=1, metadata={"help": "With --ray: engine actors, each loading the describer once "
                                                         "(e.g. one per GPU)."})
    ray_gpus: float = field(default=0.0, metadata={"help": "With --ray: GPUs per actor."})

    def direct_describer(self) -> str:
        """The VLM direct mode loads: --describer, else the old --model, where 'describer' (the server-side
        name) means the default."""
        name = self.describer or self.model
        return DEFAULT_DESCRIBER if name == "describer" else name


def _inputs(cfg: AnnotateConfig) -> list[Path]:
    if bool(cfg.images) == bool(cfg.dataset):
        raise ValueError("give exactly one of --images DIR or --dataset FILE")
    if cfg.images:
        images, skipped = scan_folder(cfg.images)
        if skipped:  # subfolders, FIFOs, broken links, other files: said, never silently left out
            logger.warning("%s: %s", cfg.images, skipped_note(skipped))
        return images

    return manifest_inputs(cfg.dataset)[0]


def done_hashes(out: Path) -> set[str]:
    """Content hashes that already have a successful result in `out`."""
    return {rec["sha256"] for rec in read_jsonl(out) if rec.get("status") == "ok"}


def _data_url(image) -> str:
    """A PNG data URL of an image (a PIL image or a path)."""
    buf = io.BytesIO()
    (load_image(image) if isinstance(image, (str, Path)) else image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def description_record(path: Path, sha: str, text: str | None, error: str = "", **extra) -> dict:
    """One annotation record: the parsed answer `text`, or a failure with `error`."""
    rec = {"filename": path.name, "image": str(path), "sha256": sha, "status": "failed" if error else "ok",
           "description": "", "verdict": "", "contract_ok": False, "problems": [], "error": error, **extra}
    if not error:
        answer = parse_answer(text or "")
        rec.update(description=answer.text, verdict=answer.verdict, contract_ok=answer.ok, problems=answer.problems)
    return rec


def brief_regions(regions) -> list[dict]:
    """Stage-1 regions as a record keeps them: label, box (pixels), score, suspicion; no landmarks."""
    return [{k: v for k, v in r.to_dict().items() if k != "landmarks"} for r in regions]


def shown_record(regions) -> dict:
    """What a record keeps of what stage 1 showed the describer: `regions` (`brief_regions`) and, when the
    describer was given aspects, `aspects`."""
    aspects = getattr(regions, "aspects", None)
    return {"regions": brief_regions(regions), **({"aspects": list(aspects)} if aspects is not None else {})}


class ServerClient(TakesRegions):
    """Round-robin over servers, retrying a request on the next server after a backoff."""

    def __init__(self, cfg: ServerOptions, model: str, max_tokens: int, question: str = DEFAULT_QUESTION,
                 system: str | None = DEFAULT_SYSTEM):
        import httpx

        self.cfg, self.model, self.max_tokens, self.question, self.system = cfg, model, max_tokens, question, system
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        limits = httpx.Limits(max_connections=cfg.concurrency * len(cfg.server))
        self.http = httpx.Client(timeout=cfg.timeout, headers=headers, limits=limits)
        self.servers = itertools.cycle([s.rstrip("/") for s in cfg.server])
        self.lock = threading.Lock()
        self.regions = cfg.region_prompt()  # stage 1 runs here, in the client, for a describer served with regions

    def close(self) -> None:
        self.close_finder()

    def _next(self) -> str:
        with self.lock:
            return next(self.servers)

    def describe(self, path: Path, regions: list | None = None) -> tuple[str, str]:
        """(answer text, server) or raises RuntimeError with the last reason. With a served region describer
        the request holds the image, its crops and the question with its `regions` (found here if not given),
        in `describe.chat`'s order."""
        import httpx

        image = load_image(path)
        if self.uses_regions and regions is None:
            regions = self.find_regions([image])[0]
        question, images = prompt_parts(image, regions, self.question, self.regions)
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": [
            *({"type": "image_url", "image_url": {"url": _data_url(im)}} for im in images),
            {"type": "text", "text": question}]})
        body = {"model": self.model, "messages": messages, "temperature": 0.0, "max_tokens": self.max_tokens}
        reason = ""
        for attempt in range(self.cfg.retries + 1):
            server = self._next()
            try:
                r = self.http.post(f"{server}/v1/chat/completions", json=body)
                if r.status_code == 200:
                    text = drop_open_box(r.json()["choices"][0]["message"]["content"] or "")
                    if text.strip():
                        return text, server
                    # an empty or null answer is no description: a failure, retried like a 5xx
                    reason = f"empty answer from {server} (content {text!r})"
                else:
                    reason = f"HTTP {r.status_code} from {server}: {r.text[:200]}"
                    if r.status_code not in RETRY_STATUS:
                        break
            except httpx.HTTPError as err:
                reason = f"{type(err).__name__} talking to {server}: {err}"
            if attempt < self.cfg.retries:
                time.sleep(self.cfg.backoff * 2 ** attempt * (0.5 + random.random()))
        raise RuntimeError(reason)


def annotate(cfg: AnnotateConfig) -> dict:
    """Run an annotation job; returns the summary (also printed by the CLI). The output file is held
    under its one-writer lock (`<out>.lock`) for the whole job."""
    if bool(cfg.server) == bool(cfg.engine):
        raise ValueError("give --server URL(s) or --engine vllm|transformers (not both)")
    if cfg.timeout <= 0 or cfg.backoff < 0 or cfg.retries < 0:
        raise ValueError("--timeout must be above 0, --backoff and --retries at least 0")
    if cfg.ray is not None:
        if not cfg.engine:
            raise ValueError("--ray runs the describer engine in Ray actors: give --engine vllm|transformers (servers "
                             "given with --server already scale by adding URLs)")

        import_ray()  # says how to install Ray, before anything else

    if cfg.engine:
        require_local_folder(cfg.direct_describer(), "--describer")
        require_local_folder(cfg.adapter, "--adapter")
    out = Path(cfg.out)
    paths = _inputs(cfg)
    if not paths:
        raise ValueError(f"{cfg.images or cfg.dataset}: no images found")
    out.parent.mkdir(parents=True, exist_ok=True)
    with one_writer(out, "realness annotate"):  # one writer per output file: a second job fails at once
        if out.exists() and not cfg.resume:
            raise ValueError(f"{out} exists: pass --resume true to continue it, or choose another --out")
        return _annotate(cfg, out, paths)


def _annotate(cfg: AnnotateConfig, out: Path, paths: list[Path]) -> dict:
    from tqdm.auto import tqdm

    skip = done_hashes(out) if cfg.resume else set()
    todo, unreadable = [], []
    for p in paths:
        try:
            sha = sha256_file(p)
        except OSError as err:  # this file fails alone (a failed record, retried on resume), never the job
            unreadable.append(description_record(p, "", None, f"{p}: cannot be read ({err.strerror or err})",
                                                 model=cfg.model))
            continue
        if sha not in skip:
            todo.append((p, sha))
            skip.add(sha)  # the same content twice in one job is described once
    summary = {"total": len(paths), "skipped": len(paths) - len(todo) - len(unreadable), "done": 0, "failed": {}}
    writer = JsonlWriter(out)
    bar = tqdm(total=len(todo) + len(unreadable), desc="annotating", unit="img", disable=not cfg.progress,
               file=sys.stderr)
    start = time.perf_counter()

    def finish(rec: dict) -> None:
        writer.write(rec)
        if rec["status"] == "ok":
            summary["done"] += 1
        else:
            summary["failed"][rec["filename"]] = rec["error"]
            logger.warning("%s: %s", rec["image"], rec["error"])
        bar.update(1)

    try:
        for rec in unreadable:
            finish(rec)
        if cfg.engine:
            _run_engine(cfg, todo, finish)
        else:
            client = ServerClient(cfg, cfg.model, cfg.max_tokens, cfg.question, cfg.system)
            gate = threading.BoundedSemaphore(cfg.concurrency * len(cfg.server))  # backpressure

            def work(item):
                path, sha = item
                try:
                    text, server = client.describe(path)
                    finish(description_record(path, sha, text, model=cfg.model, server=server))
                except Exception as err:  # any failure becomes a record, never a lost image
                    reason = str(err) if isinstance(err, (ImageError, RuntimeError)) else f"{type(err).__name__}: {err}"
                    finish(description_record(path, sha, None, reason, model=cfg.model))
                finally:
                    gate.release()

            with ThreadPoolExecutor(max_workers=cfg.concurrency * len(cfg.server)) as pool:
                for item in todo:
                    gate.acquire()
                    pool.submit(work, item)
            client.close()
    finally:
        bar.close()
        writer.close()
    elapsed = time.perf_counter() - start
    summary.update(seconds=round(elapsed, 2), images_per_s=round(summary["done"] / elapsed, 3) if elapsed else 0.0)
    return summary


class EngineAnnotator:
    """Direct mode: the describer engine loaded once, turning batches of (path, sha256) into records.
    Runs in this process, or in each Ray actor with `--ray` (`realness.distributed`)."""

    def __init__(self, cfg: AnnotateConfig):
        self.cfg = cfg
        self.engine, self.info = load_describer(cfg.engine, cfg.direct_describer(), cfg.adapter, question=cfg.question,
                                                system=cfg.system or None, max_new_tokens=cfg.max_tokens,
                                                verdict_guide=cfg.verdict_guide)

    def records(self, items: list[tuple[Path, str]]) -> list[dict]:
        """One record per item, in order: the description, or why the image failed."""

        model, out, batch = self.info["name"], {}, []
        for k, (path, sha) in enumerate(items):
            try:
                batch.append((k, path, sha, load_image(path)))
            except ImageError as err:
                out[k] = description_record(path, sha, None, str(err), model=model)
        images, regions = [b[3] for b in batch], None
        try:
            if batch and getattr(self.engine, "uses_regions", False):  # stage 1 once, for the prompt and the record
                regions = self.engine.find_regions(images)
            texts = self.engine.generate(images, self.cfg.batch_size, regions) if batch else []
        except Exception as err:  # noqa: BLE001 - the engine failing on this batch fails its images, not the job
            texts = [RuntimeError(f"describer failed: {err}")] * len(batch)
        for j, ((k, path, sha, _), text) in enumerate(zip(batch, texts)):
            if isinstance(text, Exception):
                out[k] = description_record(path, sha, None, str(text), model=model)
            else:
                extra = shown_record(regions[j]) if regions is not None else {}
                out[k] = description_record(path, sha, text, model=model, engine=self.info["engine"], **extra)
        return [out[k] for k in range(len(items))]

    def close(self) -> None:
        if hasattr(self.engine, "close"):
            self.engine.close()


def _run_engine(cfg: AnnotateConfig, todo, finish) -> None:
    if cfg.ray is not None:
        for rec in annotate_on_ray(cfg, todo):
            finish(rec)
        return
    annotator = EngineAnnotator(cfg)
    try:
        for start in range(0, len(todo), cfg.batch_size):
            for rec in annotator.records(todo[start:start + cfg.batch_size]):
                finish(rec)
    finally:
        annotator.close()


class AnnotateStage:
    """`realness annotate --ray`: one describer engine per actor (the same engine, prompt and adapter as
    direct mode and `realness serve`)."""

    def __init__(self, cfg):
        self.annotator = EngineAnnotator(cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
