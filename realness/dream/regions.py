"""Region evidence: faces, hands, people and text found by real detectors whose weights ship in their wheels.

Faces, hands, bodies and text are where generated images most often go wrong, and where GPT-4.1's RAISE
descriptions look (they name hands in 37 % of the images where a hand is detected, 4 % elsewhere).

| label | detector (package) | what a region holds |
|---|---|---|
| `face` | MTCNN (`facenet-pytorch`, weights in the wheel) | box, probability, 5 landmarks (eyes, nose, mouth corners) |
| `hand` | MediaPipe Hands 0.10.21 (`mediapipe`, tflite in the wheel) | box around the 21 landmarks, handedness score, landmarks |
| `person` | MediaPipe Pose, complexity 1 (one person per image) | box around the visible landmarks, mean visibility, landmarks |
| `text` | PP-OCRv4 (`rapidocr-onnxruntime`, ONNX in the wheel) | box around the text line, recognition score, the text read |

Boxes are `(x0, y0, x1, y1)` in pixels of the image given; `Region.normalised()` gives them on the 0-1000
grid Qwen2-VL grounds with. Detectors run on a copy with its longer side at most `long_side` (640) px.
Install: `.ci/install` (the three packages go in with `--no-deps`, their pins clash with torch 2.13 / numpy 2;
the `detectors` extra lists what they need besides). A detector whose package is missing is reported once
and skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from realness.boxes import to_grid
from realness.images import load_image

logger = logging.getLogger(__name__)
LABELS = ("face", "hand", "person", "text")
PACKAGES = {"face": "facenet-pytorch", "hand": "mediapipe", "person": "mediapipe", "text": "rapidocr-onnxruntime"}


@dataclass
class Region:
    """One detected region."""

    label: str
    box: tuple[float, float, float, float]
    score: float
    detector: str
    landmarks: list[list[float]] | None = None
    text: str | None = None
    # How inconsistent the artifact map finds the region (its mean inside the box; `EvidenceFinder` fills it).
    suspicion: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box"] = [round(float(v), 1) for v in self.box]
        d["score"] = round(float(self.score), 4)
        if self.suspicion is not None:
            d["suspicion"] = round(float(self.suspicion), 4)
        if self.landmarks is not None:
            d["landmarks"] = [[round(float(a), 1), round(float(b), 1)] for a, b in self.landmarks]
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> Region:
        return cls(label=d["label"], box=tuple(d["box"]), score=float(d["score"]), detector=d.get("detector", ""),
                   landmarks=d.get("landmarks"), text=d.get("text"), suspicion=d.get("suspicion"))

    def normalised(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The box on the 0-1000 grid of the image's (width, height) `size` (Qwen2-VL's convention), as the
        describers' prompts write it (`realness.boxes.to_grid`)."""
        return to_grid(self.box, size)

    def scaled(self, factor: float) -> Region:
        lm = [[a * factor, b * factor] for a, b in self.landmarks] if self.landmarks else self.landmarks
        return Region(self.label, tuple(v * factor for v in self.box), self.score, self.detector, lm, self.text,
                      self.suspicion)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


class Regions(list):
    """An image's stage-1 regions (a list of `Region`, used as one) and the aspects stage 1 flags for it:
    `aspects`, mention categories (`realness.mentions.CATEGORIES`) its aspect tagger expects a description of
    the image to discuss (`realness.dream.aspects`), or None when no tagger ran."""

    def __init__(self, regions: Sequence[Region] = (), aspects: Sequence[str] | None = None):
        super().__init__(regions)
        self.aspects = tuple(aspects) if aspects is not None else None


ORDERS = ("suspicion", "confidence", "area")


def rank_regions(regions: Sequence[Region], order: str = "suspicion") -> list[Region]:
    """Regions most worth a closer look first: `suspicion` (the artifact map's mean inside the box; regions
    without one, after those with, by confidence), `confidence` (the detector's score) or `area` (largest first).
    Ties keep the detectors' order."""
    if order not in ORDERS:
        raise ValueError(f"region order must be one of {list(ORDERS)}, got {order!r}")
    if order == "confidence":
        key = lambda r: -r.score  # noqa: E731
    elif order == "area":
        key = lambda r: -r.area  # noqa: E731
    else:
        key = lambda r: (r.suspicion is None, -(r.suspicion or 0.0), -r.score)  # noqa: E731
    return sorted(regions, key=key)


@contextlib.contextmanager
def _quiet_stderr():
    """MediaPipe's C++ side prints start-up lines (and one harmless protobuf complaint) straight to fd 2."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def _close_quietly(model) -> None:
    """Close a MediaPipe solution with fd 2 silenced: its graph's teardown prints a protobuf 6 complaint
    ("'MessageFactory' object has no attribute 'GetPrototype'") straight to the console otherwise, at
    whatever moment the garbage collector picks."""
    with _quiet_stderr(), contextlib.suppress(Exception):
        model.close()


def _batched_nms(boxes, scores, idxs, threshold: float):
    """torchvision.ops.batched_nms in plain torch (facenet-pytorch's only compiled op; the CPU test machines'
    torchvision cannot load its own)."""
    import torch

    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offset = idxs.to(boxes) * (boxes.max() + 1)
    b = boxes + offset[:, None]
    order = scores.argsort(descending=True)
    x0, y0, x1, y1 = b.unbind(1)
    area = (x1 - x0).clamp_min(0) * (y1 - y0).clamp_min(0)
    keep = []
    while order.numel():
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = (torch.minimum(x1[i], x1[rest]) - torch.maximum(x0[i], x0[rest])).clamp_min(0)
        h = (torch.minimum(y1[i], y1[rest]) - torch.maximum(y0[i], y0[rest])).clamp_min(0)
        inter = w * h
        iou = inter / (area[i] + area[rest] - inter).clamp_min(1e-9)
        order = rest[iou <= threshold]
    return torch.stack(keep)


def _box_of(points: np.ndarray, size: tuple[int, int], pad: float) -> tuple[float, float, float, float]:
    w, h = size
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    px, py = (x1 - x0) * pad, (y1 - y0) * pad
    return (max(0.0, x0 - px), max(0.0, y0 - py), min(float(w), x1 + px), min(float(h), y1 + py))


class RegionDetector:
    """Runs the detectors of `labels` on PIL images; each detector loads on first use."""

    def __init__(self, labels: Sequence[str] = LABELS, long_side: int = 640, face_threshold: float = 0.9,
                 hand_threshold: float = 0.5, person_threshold: float = 0.5, text_threshold: float = 0.6):
        unknown = [label for label in labels if label not in LABELS]
        if unknown:
            raise ValueError(f"unknown region label(s) {unknown}; choose from {list(LABELS)}")
        self.labels, self.long_side = tuple(labels), long_side
        self.thresholds = {"face": face_threshold, "hand": hand_threshold, "person": person_threshold, "text": text_threshold}
        self._models: dict[str, object] = {}
        self.missing: dict[str, str] = {}

    def close(self) -> None:
        """Release the detectors now (MediaPipe's graphs quietly)."""
        for model in self._models.values():
            if hasattr(model, "close"):
                _close_quietly(model)
        self._models.clear()

    def available(self) -> list[str]:
        """The labels whose detector loads here."""
        return [label for label in self.labels if self._model(label) is not None]

    def _model(self, label: str):
        if label in self.missing:
            return None
        if label not in self._models:
            try:
                self._models[label] = getattr(self, f"_load_{label}")()
                if hasattr(self._models[label], "close"):  # MediaPipe's graphs: closed quietly, when this goes
                    weakref.finalize(self, _close_quietly, self._models[label])
            except ImportError as err:
                self.missing[label] = f"needs `{PACKAGES[label]}` (bash .ci/install installs it): {err}"
                logger.warning("no %s detector: %s", label, self.missing[label])
                return None
        return self._models[label]

    # ---- loading ----------------------------------------------------------------------------------
    @staticmethod
    def _load_face():
        from facenet_pytorch import MTCNN
        from facenet_pytorch.models.utils import detect_face

        detect_face.batched_nms = _batched_nms
        return MTCNN(keep_all=True, device="cpu")

    @staticmethod
    def _mediapipe():
        import warnings

        os.environ.setdefault("GLOG_minloglevel", "2")
        # MediaPipe 0.10.21 reads FieldDescriptor.label, which protobuf 6.33 deprecates (7 removes it)
        warnings.filterwarnings("ignore", message=r"label\(\) is deprecated", category=DeprecationWarning)
        with _quiet_stderr():
            import mediapipe as mp
        return mp

    def _load_hand(self):
        mp = self._mediapipe()
        with _quiet_stderr():
            return mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=4, model_complexity=1,
                                            min_detection_confidence=self.thresholds["hand"])

    def _load_person(self):
        mp = self._mediapipe()
        with _quiet_stderr():
            return mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                          min_detection_confidence=self.thresholds["person"])

    @staticmethod
    def _load_text():
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        from rapidocr_onnxruntime import RapidOCR

        engine = RapidOCR()
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        return engine

    # ---- detecting --------------------------------------------------------------------------------
    def detect(self, image: Image.Image) -> list[Region]:
        """Every region found in `image`, boxes in its own pixels, highest score first within a label."""
        image = image.convert("RGB")
        scale = min(1.0, self.long_side / max(image.size))
        work = image if scale == 1.0 else image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                                       Image.Resampling.BILINEAR)
        rgb = np.asarray(work)
        found: list[Region] = []
        for label in self.labels:
            model = self._model(label)
            if model is not None:
                regions = getattr(self, f"_detect_{label}")(model, work, rgb)
                found += sorted(regions, key=lambda r: -r.score)
        return [r.scaled(1 / scale) for r in found] if scale != 1.0 else found

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[Region]]:
        return [self.detect(im) for im in images]

    def _detect_face(self, mtcnn, work, rgb) -> list[Region]:
        import torch

        with torch.inference_mode():
            boxes, probs, points = mtcnn.detect(work, landmarks=True)
        if boxes is None:
            return []
        out = []
        for box, p, lm in zip(boxes, probs, points):
            if p is not None and p >= self.thresholds["face"]:
                x0, y0, x1, y1 = (float(v) for v in box)
                w, h = work.size
                out.append(Region("face", (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)), float(p), "mtcnn",
                                  landmarks=[[float(a), float(b)] for a, b in lm]))
        return out

    def _detect_hand(self, hands, work, rgb) -> list[Region]:
        with _quiet_stderr():
            result = hands.process(rgb)
        if not result.multi_hand_landmarks:
            return []
        w, h = work.size
        out = []
        for lms, handed in zip(result.multi_hand_landmarks, result.multi_handedness or [None] * len(result.multi_hand_landmarks)):
            pts = np.array([[p.x * w, p.y * h] for p in lms.landmark])
            score = float(handed.classification[0].score) if handed else 1.0
            out.append(Region("hand", _box_of(pts, (w, h), 0.15), score, "mediapipe-hands", landmarks=pts.tolist()))
        return out

    def _detect_person(self, pose, work, rgb) -> list[Region]:
        with _quiet_stderr():
            result = pose.process(rgb)
        if result.pose_landmarks is None:
            return []
        w, h = work.size
        lms = result.pose_landmarks.landmark
        vis = np.array([p.visibility for p in lms])
        pts = np.array([[p.x * w, p.y * h] for p in lms])
        keep = vis > 0.5
        if keep.sum() < 4:
            return []
        pts = np.clip(pts[keep], [0, 0], [w, h])
        return [Region("person", _box_of(pts, (w, h), 0.1), float(vis[keep].mean()), "mediapipe-pose", landmarks=pts.tolist())]

    def _detect_text(self, ocr, work, rgb) -> list[Region]:
        result, _ = ocr(rgb[..., ::-1].copy())  # RapidOCR reads BGR like OpenCV
        out = []
        for quad, text, score in result or []:
            # PP-OCR reads textures (stars, fences) as one or two glyphs now and then: ask for two or more
            if float(score) >= self.thresholds["text"] and sum(ch.isalnum() for ch in str(text)) >= 2:
                pts = np.asarray(quad, dtype=float)
                out.append(Region("text", _box_of(pts, work.size, 0.0), float(score), "rapidocr", text=str(text)))
        return out


def labels_found(images: Sequence, detector: RegionDetector | None = None) -> list[set[str]]:
    """The region labels (face, hand, person, text) the detectors find in each image (PIL images or paths), in
    order; a detector made here is closed when done."""
    own = detector is None
    detector = detector or RegionDetector()
    try:
        return [{r.label for r in detector.detect(load_image(im) if isinstance(im, (str, Path)) else im)}
                for im in images]
    finally:
        if own:
            detector.close()


def box_mask(regions: Sequence[Region], shape: tuple[int, int], image_size: tuple[int, int], soft: float = 0.0) -> np.ndarray:
    """(H, W) float32: each region's box (from `image_size` = (w, h) pixels to `shape`) filled with 1; with
    `soft` > 0 the edges fall off over that share of the box size."""
    h, w = shape
    sx, sy = w / image_size[0], h / image_size[1]
    out = np.zeros(shape, np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    for r in regions:
        x0, y0, x1, y1 = r.box[0] * sx, r.box[1] * sy, r.box[2] * sx, r.box[3] * sy
        if soft > 0:
            mx, my = max(1.0, (x1 - x0) * soft), max(1.0, (y1 - y0) * soft)
            fx = np.clip(np.minimum(xx - x0, x1 - xx) / mx + 0.5, 0, 1)
            fy = np.clip(np.minimum(yy - y0, y1 - yy) / my + 0.5, 0, 1)
            out = np.maximum(out, fx * fy)
        else:
            out[(yy >= y0) & (yy <= y1) & (xx >= x0) & (xx <= x1)] = 1
    return out
