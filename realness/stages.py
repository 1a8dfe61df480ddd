"""The stages of `realness run`, one function each, shared by the single-process runner (`realness.pipeline`)
and the Ray Data runner (`realness.distributed`):
    read      the image (downscaled once to --max_pixels)
    regions   stage 1 (detectors + artifact map, `realness.dream.evidence.EvidenceFinder`), once per image and
              only when something needs it: a describer trained with regions, or DREAM's evidence maps
    describe  the given text, one an earlier run wrote, or the describer's (engine or server)
    score     CORE
    map       DREAM's map and overlay, then every image's thumbnail

Each stage fills in the records of one chunk in place and fails an image alone (`fail`): a stage that raises
on the chunk is rerun image by image. `Models` loads each model on first use and remembers what it loaded.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from describe.annotate import ServerClient, ServerOptions, description_record, shown_record
from describe.engines import DEFAULT_DESCRIBER, load_describer
from describe.verdict import HELP as GUIDE_HELP
from realness.answers import parse_answer
from realness.cluster import RayOptions
from realness.core.loading import default_num_workers
from realness.core.modeling import CoreModel
from realness.dream.configuration import DreamConfig
from realness.dream.evidence import EvidenceFinder, EvidenceMapper
from realness.dream.run import load_mapper
from realness.files import output_name, save_image
from realness.images import PIXEL_BUDGET, ImageError, load_image
from realness.scoring import default_batch_size


@dataclass
class RunConfig(RayOptions, ServerOptions):
    """Options of `realness run`; DREAM's are the `--dream.*` group (`DreamConfig`)."""

    images: str | None = field(default=None, metadata={"help": "Folder of images, one image file, a manifest "
                                                               "CSV/JSONL/JSON with an image column (optional mos, "
                                                               "description), or a quoted glob of images ('dir/*.png') "
                                                               "or of manifest shards ('shards/part-*.csv'); also the "
                                                               "first positional argument.", "positional": True})
    out: str = field(default="realness-run", metadata={"help": "Output folder: scores.csv, descriptions.jsonl, maps/, "
                                                               "report.html, summary.json."})
    descriptions: str | None = field(default=None, metadata={"help": "Descriptions you already have (CSV/JSONL with "
                                                                     "filename,description); the describer writes only "
                                                                     "the missing ones."})
    describer: str = field(default=DEFAULT_DESCRIBER, metadata={"help": "Describer VLM id or folder, "
                                                                        "'offline/small-describer' for the bundled "
                                                                        "offline describer, 'tiny-qwen2vl' for the "
                                                                        "random test model, or 'none' to use only "
                                                                        "--descriptions."})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder for the describer (from "
                                                                "train-describer)."})
    engine: str = field(default="auto", metadata={"help": "Describer engine: transformers, vllm, or auto (vllm on a "
                                                          "GPU when installed, else transformers)."})
    server_model: str = field(default="describer", metadata={"help": "Model name sent to --server (an adapter name or "
                                                                     "the base)."})
    core: str = field(default="auto", metadata={"help": "CORE model folder, or a bundled one: 'offline' (image + "
                                                        "description), 'offline-image' (image alone), or 'auto': "
                                                        "'offline', but 'offline-image' when the describer writes "
                                                        "descriptions for this run and its distillation gate says its "
                                                        "text does not help CORE (the bundled offline describer's "
                                                        "does), with one warning."})
    dream: bool = field(default=True, metadata={"help": "Draw DREAM realness maps."})
    truth: str | None = field(default=None, metadata={"help": "Human scores (RAISE ratings.csv or a manifest with "
                                                              "image,mos) for correlations and a scatter plot."})
    offline_fallback: bool = field(default=True, metadata={"help": "If the default describer or CLIP cannot be "
                                                                   "downloaded, use the bundled offline describer "
                                                                   "(offline/small-describer) and evidence maps "
                                                                   "(artifact map + detected regions, DreamConfig "
                                                                   "--source auto) instead of stopping."})
    chunk_size: int = field(default=16, metadata={"help": "Images read, described, scored and mapped together; bounds "
                                                          "memory."})
    describe_batch: int = field(default=8, metadata={"help": "Images per describer generate call (transformers engine)."})
    max_tokens: int = field(default=64, metadata={"help": "Description length cap in tokens."})
    verdict_guide: str = field(default="auto", metadata={"help": GUIDE_HELP})
    num_workers: int | None = field(default=None, metadata={"help": "DataLoader workers that resize and tokenise "
                                                                    "CORE's inputs while it scores; 0: in this "
                                                                    "process. Default: on a GPU one per CPU core "
                                                                    "beyond the driving one (at most 8), on a CPU none "
                                                                    "(the model's threads use every core)."})
    device: str = field(default="auto", metadata={"help": "Torch device for the describer, CORE and DREAM: auto (cuda "
                                                          "when available), cpu, cuda."})
    resume: bool = field(default=True, metadata={"help": "Continue a run in --out: skip images already done, retry "
                                                         "failed ones."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    thumb_size: int = field(default=256, metadata={"help": "Longer side in pixels of the report's thumbnails."})
    overlay_size: int = field(default=1024, metadata={"help": "Longer side in pixels of the overlay PNGs in maps/ (the "
                                                              ".npz holds the map at DREAM's --map_long_side)."})
    max_pixels: int = field(default=PIXEL_BUDGET, metadata={"help": "Images with more pixels are downscaled once on "
                                                                    "read (aspect kept) for every stage; bounds "
                                                                    "memory. 0: never."})
    ray_actors: list[int] = field(default_factory=lambda: [1, 1, 1], metadata={"help": "With --ray: actors of the "
                                                                                       "describe, score (CORE) and map "
                                                                                       "(DREAM) stages; each loads its "
                                                                                       "model once."})
    ray_gpus: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0], metadata={"help": "With --ray: GPUs per "
                                                                                             "actor of the describe, "
                                                                                             "score and map stages "
                                                                                             "(fractions share a GPU, "
                                                                                             "e.g. 1 0.25 0.25)."})
    ray_cpus_local: int = field(default=0, metadata={"help": "With --ray alone: CPUs of the Ray instance started here "
                                                             "(0: all)."})
    dream_config: DreamConfig = field(default_factory=DreamConfig, metadata={
        "prefix": "dream", "flat_aliases": True,
        "help": "DREAM's options (`realness map --help` explains each); YAML: a `dream:` mapping."})


STAGES = ("read", "regions", "describe", "score", "map", "thumbnail")


class Models:
    """Loads each model on first use and remembers what was loaded (and whether it is a placeholder)."""

    def __init__(self, cfg: RunConfig, dream_config: DreamConfig, device: str):
        self.cfg, self.dream_config, self.device = cfg, dream_config, device
        self.info: dict[str, dict] = {}
        self.load_s: dict[str, float] = {}
        self._describer = self._core = self._mapper = self._finder = None
        self._evidence: dict[str, object] = {}  # stage 1 by content hash, for the chunk at hand

    def _timed(self, key: str, fn):
        start = time.perf_counter()
        value = fn()
        self.load_s[key] = round(time.perf_counter() - start, 3)
        return value

    def core(self):
        if self._core is None:
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
        mapper, self.info["maps"] = load_mapper(self.dream_config, self.device, self.cfg.offline_fallback)
        return mapper

    def finder(self) -> EvidenceFinder:
        """Stage 1: the evidence mapper's own finder when DREAM draws evidence maps, else one of its own."""
        if self._finder is None:
            mapper = self.mapper() if self.cfg.dream else None
            self._finder = (mapper.finder if isinstance(mapper, EvidenceMapper) else
                            self._timed("regions", lambda: EvidenceFinder(self.dream_config, self.device)))
        return self._finder

    def has_evidence(self, rec: dict) -> bool:
        return rec["sha256"] in self._evidence

    def evidence(self, recs: list[dict], images: list) -> list:
        """Stage 1 for these records' images, run once per image (remembered by content hash for the chunk)."""
        missing = [k for k, r in enumerate(recs) if not self.has_evidence(r)]
        if missing:
            found = self.finder().find([images[k] for k in missing])
            if len(self._evidence) > 4 * self.cfg.chunk_size:  # a chunk's worth is all that is ever reused
                self._evidence.clear()
            self._evidence.update((recs[k]["sha256"], e) for k, e in zip(missing, found))
        return [self._evidence[r["sha256"]] for r in recs]

    def describer(self):
        """An engine with `.generate(images, batch_size)`, or a server client with `.describe(path)`."""
        if self._describer is None:
            self._describer = self._timed("describer", self._load_describer)
        return self._describer

    def _load_describer(self):
        cfg = self.cfg
        if cfg.server:
            self.info["describer"] = {"name": cfg.server_model, "server": cfg.server, "placeholder": False}
            return ServerClient(cfg, cfg.server_model, cfg.max_tokens)
        if cfg.describer == "none":
            raise ValueError("no description for this image and --describer none")

        engine, self.info["describer"] = load_describer(cfg.engine, cfg.describer, cfg.adapter, cfg.offline_fallback,
                                                        self.device, max_new_tokens=cfg.max_tokens,
                                                        verdict_guide=cfg.verdict_guide)
        return engine

    def close(self) -> None:
        for model in (self._describer, self._mapper, self._finder):
            if model is not None and hasattr(model, "close"):
                model.close()


def fail(rec: dict, stage: str, err: Exception | str) -> None:
    rec.update(status="failed", stage=stage, error=str(err) if str(err) else type(err).__name__)


def split_time(recs: list[dict], stage: str, start: float) -> None:
    """Charge a stage's wall time to the images it processed, evenly."""
    if recs:
        share = (time.perf_counter() - start) / len(recs)
        for r in recs:
            r["seconds"][stage] = round(share, 4)


def read_stage(todo: list[dict], cfg: RunConfig, timed: bool = True) -> dict[int, object]:
    """The images of the records still ok, by index; an unreadable one fails its record (stage `read`).
    Stages on other workers (`realness.distributed`) read again with `timed=False`."""

    images: dict[int, object] = {}
    start = time.perf_counter()
    for i, rec in enumerate(todo):
        if rec["status"] != "ok" and rec.get("stage") == "read":  # a re-read would fail again
            continue
        try:
            images[i] = load_image(rec["image"], cfg.max_pixels or None)
        except ImageError as err:
            fail(rec, "read", err)
    if timed:
        split_time(todo, "read", start)
    return images


def describe_stage(todo, images, cfg, models: Models, given, cached, described) -> None:
    """Descriptions: the user's, then ones written by an earlier run, then the describer; each text used is
    written to `described` (anything with `.write(record)`)."""

    need = []
    for i in images:
        rec = todo[i]
        if given.get(rec["filename"], "").strip():
            rec.update(description=given[rec["filename"]].strip(), description_source="given")
            if cached.get(rec["sha256"]) != rec["description"]:  # descriptions.jsonl lists every text used
                if record_text(described, rec, description_record(Path(rec["image"]), rec["sha256"],
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
                fail(todo[i], "describe", err)
        if describer is not None:
            regions = None
            if getattr(describer, "uses_regions", False):  # stage 1 here, once: DREAM reuses it
                if describer.regions.aspects:
                    models.finder().use_aspects()
                need = regions_stage(todo, need, images, models)
                regions = [e.regions for e in models.evidence([todo[i] for i in need], [images[i] for i in need])]
            recs, imgs = [todo[i] for i in need], [images[i] for i in need]
            start = time.perf_counter()
            texts = _describe(describer, recs, imgs, cfg, regions)
            split_time([todo[i] for i in need], "describe", start)
            source = "server" if cfg.server else "describer"
            for k, (i, text) in enumerate(zip(need, texts)):
                rec = todo[i]
                err = text if isinstance(text, Exception) else None
                shown = shown_record(regions[k]) if regions is not None else {}  # what it was shown
                written = record_text(described, rec, description_record(
                    Path(rec["image"]), rec["sha256"], None if err else text, str(err or ""),
                    model=models.info["describer"]["name"], source=source, **shown))
                if not written:
                    continue
                if err:
                    fail(rec, "describe", err)
                elif not text.strip():
                    fail(rec, "describe", "the describer returned an empty description")
                else:
                    rec.update(description=text.strip(), description_source=source)
                    cached[rec["sha256"]] = rec["description"]
    for i in images:
        if todo[i]["status"] == "ok":
            answer = parse_answer(todo[i]["description"])
            todo[i].update(verdict=answer.verdict, contract_ok=answer.ok)


def regions_stage(todo: list[dict], idx: list[int], images, models: Models) -> list[int]:
    """Stage 1 for the records `idx` it has not run for yet (`Models.evidence`), timed and isolated like every
    stage (`per_image`: an image it fails on fails alone). Returns the records still ok."""
    new = [i for i in idx if not models.has_evidence(todo[i])]
    per_image(new, todo, "regions", lambda j: models.evidence([todo[i] for i in j], [images[i] for i in j]))
    return [i for i in idx if todo[i]["status"] == "ok"]


def record_text(described, rec: dict, record: dict) -> bool:
    """Append a description record; a write that fails (a full disk) fails the image at stage `write`."""
    try:
        described.write(record)
        return True
    except OSError as err:
        fail(rec, "write", f"cannot write {err.filename or 'descriptions.jsonl'}: {err.strerror or err}")
        return False


def score_stage(todo, images, models: Models) -> None:
    ok = [i for i in images if todo[i]["status"] == "ok"]
    per_image(ok, todo, "score", lambda idx: _score(models, [images[i] for i in idx], [todo[i] for i in idx]))


def map_stage(todo, images, cfg, dream_config, models: Models, out: Path) -> None:
    """DREAM maps for the records still ok, then a thumbnail for every image that was read."""
    if cfg.dream:
        ok = [i for i in images if todo[i]["status"] == "ok"]
        if isinstance(models.mapper(), EvidenceMapper) and ok:  # stage 1 (if the describe stage did not run it)
            ok = regions_stage(todo, ok, images, models)
        per_image(ok, todo, "map", lambda idx: _map(models, [images[i] for i in idx], [todo[i] for i in idx],
                                                      dream_config, cfg, out))
    for i, image in images.items():  # per image, like every stage: a full disk fails the image, not the run
        start = time.perf_counter()
        if todo[i]["stage"] == "write":  # already failed writing: no more of its files
            continue
        try:
            _thumb(image, todo[i], cfg, out)
        except OSError as err:
            _write_failed(todo[i], err, out)
        split_time([todo[i]], "thumbnail", start)


def per_image(idx: list[int], todo: list[dict], stage: str, fn) -> None:
    """Run `fn` on the whole batch; if it fails, run it image by image so one bad input fails alone."""
    if not idx:
        return
    start = time.perf_counter()
    try:
        fn(idx)
        split_time([todo[i] for i in idx], stage, start)
        return
    except Exception as err:  # noqa: BLE001 - isolate the culprit below
        if len(idx) == 1:
            fail(todo[idx[0]], stage, err)
            return
    for i in idx:
        start = time.perf_counter()
        try:
            fn([i])
        except Exception as err:  # noqa: BLE001 - one image's failure is recorded, the rest go on
            fail(todo[i], stage, err)
        split_time([todo[i]], stage, start)


def _describe(describer, recs: list[dict], images: list, cfg: RunConfig, regions: list | None = None) -> list:
    """Texts in order; an Exception in place of the text for each image that failed. `regions`: stage 1's, per
    image, for a describer that takes them."""
    if hasattr(describer, "generate"):
        try:
            return (describer.generate(images, cfg.describe_batch, regions) if regions is not None
                    else describer.generate(images, cfg.describe_batch))
        except Exception as err:  # noqa: BLE001 - the engine failing on this chunk fails its images
            return [RuntimeError(f"describer failed: {err}")] * len(images)

    def one(k):
        try:
            return describer.describe(Path(recs[k]["image"]), regions[k] if regions is not None else None)[0]
        except Exception as err:  # noqa: BLE001
            return err

    with ThreadPoolExecutor(max_workers=max(1, cfg.concurrency * len(cfg.server))) as pool:
        return list(pool.map(one, range(len(recs))))


def _score(models: Models, images: list, recs: list[dict]) -> None:
    core = models.core()
    batch = default_batch_size(models.device)
    workers = models.cfg.num_workers if models.cfg.num_workers is not None else default_num_workers(models.device)
    out = core.predict(images if core.config.uses_image else None,
                       [r["description"] for r in recs] if core.config.uses_text else None,
                       batch_size=batch, num_workers=min(workers, len(images) // batch), with_novelty=True)
    for rec, (value, novelty) in zip(recs, out.tolist()):
        mos = core.to_mos(value)
        novelty, warning = core.novelty_report(novelty)
        rec.update(score_z=float(value), score_mos=None if mos is None else float(mos), novelty=novelty,
                   warning=warning)


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
    fail(rec, "write", f"cannot write {err.filename or 'an output'}: {err.strerror or err}")


def _map(models: Models, images: list, recs: list[dict], config: DreamConfig, cfg: RunConfig, out: Path) -> None:
    mapper = models.mapper()
    descriptions = [r["description"] for r in recs]
    maps = (mapper.map_batch(images, descriptions, models.evidence(recs, images)) if isinstance(mapper, EvidenceMapper)
            else mapper.map_batch(images, descriptions))
    for image, rec, rmap in zip(images, recs, maps):
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
        rec.update(map_flat=bool(rmap.flat), map_source=rmap.source, regions=rmap.regions, map_note=rmap.note,
                   claims=rmap.claim_boxes())


def _thumb(image, rec: dict, cfg: RunConfig, out: Path) -> None:
    rec["thumb"] = f"thumbs/{output_name(rec['filename'])}.jpg"
    _save_thumbnail(image, out / rec["thumb"], cfg.thumb_size)


def _save_thumbnail(image, path: Path, size: int) -> None:
    """A JPEG of `image` with its longer side at most `size` (the image itself is left as it is)."""

    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    save_image(thumb.convert("RGB"), path, quality=85)

