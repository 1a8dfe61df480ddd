"""Output files that survive kills, full disks and odd names.

- `output_name`: the name outputs derived from an input file get; two different inputs never share one.
- `atomic_path`: write under a temporary name and rename, so a kill or a full disk never leaves a
  truncated file under the real name.
- `JsonlWriter` / `read_jsonl`: append-only JSONL that starts on a fresh line after a torn last line,
  and a reader that skips (and reports) malformed lines instead of losing the records around them.
- `one_writer`: the exclusive lock an output folder (or output file) is held under while a job writes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

logger = logging.getLogger(__name__)
_SAFE = "._-"


# 255 bytes (ext4, XFS, APFS, NTFS) less the longest suffix outputs add (`_overlay.png`) and the temporary
# prefix `atomic_path` adds (`.tmp-PID-`)
MAX_OUTPUT_NAME_BYTES = 200


def output_name(filename: str) -> str:
    """A file-system-safe name for outputs derived from `filename`, keeping its extension.

    A name made only of letters, digits and `._-` is kept as it is. Any other name has the odd
    characters replaced by `_` and gains `~` plus 8 hex digits of the original name's hash before its
    extension (`a b.png` -> `a_b~1f0c9a2e.png`): `~` never appears in a kept name, so `a b.png` and
    `a_b.png` (or any two distinct names) never collide, and the name is the same on every run.
    A name longer than `MAX_OUTPUT_NAME_BYTES` (file systems allow 255 bytes, and outputs add suffixes such
    as `_overlay.png` and a temporary prefix) is shortened the same way, its stem cut, the hash kept.
    """
    safe = "".join(c if c.isalnum() or c in _SAFE else "_" for c in filename)
    if safe == filename and filename not in ("", ".", "..") and len(filename.encode("utf-8", "surrogateescape")) <= MAX_OUTPUT_NAME_BYTES:
        return filename
    stem, dot, ext = safe.rpartition(".")
    stem, ext = (stem, f".{ext}") if dot and stem else (safe, "")
    ext = ext[:16]
    digest = hashlib.sha256(filename.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    while len(f"{stem}~{digest}{ext}".encode("utf-8", "surrogateescape")) > MAX_OUTPUT_NAME_BYTES:
        stem = stem[: max(0, len(stem) - max(1, (len(stem) // 8)))]
    return f"{stem}~{digest}{ext}"


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path` (same extension); on success it is renamed onto `path`,
    on any error it is removed, so `path` is either complete or untouched."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and not err.filename and err.errno:  # a full disk says which file it hit
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """`Path.write_text` that never leaves a half-written file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_image(image, path: str | Path, **options) -> Path:
    """`PIL.Image.save` through a temporary name: the file is complete or absent, never truncated."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, **options)
    return path


def is_local_path(name: str) -> bool:
    """Whether a model name can only be a local path: a hub id is `owner/name`, one slash, no leading `/ . ~`."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def require_local_folder(name: str | None, flag: str) -> None:
    """A `flag` value that can only be a local path must exist: raise FileNotFoundError naming it (hub ids and
    registered names pass; they are checked when they load)."""
    if name and is_local_path(str(name)) and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"{flag} {name}: no such folder")


def _drop_torn_tail(path: Path) -> int:
    """Cut a file back to its last newline: the fragment a kill left mid-line is no record (readers skip it
    and its image is redone), and without it the next record starts on a line of its own and later runs
    do not warn about it again. Returns the bytes dropped."""
    size = path.stat().st_size
    with path.open("rb+") as fh:
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            fh.seek(start)
            cut = fh.read(end - start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            fh.truncate(keep)
        return size - keep


class JsonlWriter:
    """Append-only JSONL, one flushed line per record (thread-safe), so a kill loses at most the line
    being written. A file whose last line was torn by a kill loses that fragment first (the readers
    already skipped it, with their one warning), so the next record starts on a line of its own."""

    def __init__(self, out: str | Path):
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.is_file() and out.stat().st_size:
            dropped = _drop_torn_tail(out)
            if dropped:
                logger.info("%s: dropped the %d-byte fragment of a cut-off last line", out, dropped)
        self.path = out
        self.fh = out.open("a", encoding="utf-8")
        self.lock = threading.Lock()

    def write(self, record: dict) -> None:
        with self.lock:
            try:
                self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.fh.flush()
            except OSError as err:
                raise OSError(err.errno, err.strerror or str(err), str(self.path)) from err

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError as err:  # a full disk: the last line may be torn, which every reader skips
            logger.warning("%s: the last record could not be written (%s)", self.path, err.strerror or err)


def read_jsonl(path: str | Path) -> list[dict]:
    """Every well-formed record of a JSONL file. Malformed lines (a torn line from a kill, bad bytes)
    are skipped and reported in one warning naming the file and the line numbers."""
    path = Path(path)
    records, bad = [], []
    if not path.is_file():
        return records
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                bad.append(lineno)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad.append(lineno)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        logger.warning("%s: skipped %d malformed line(s) (line %s); their images are redone", path, len(bad), shown)
    return records


class OutputBusy(OSError):
    """Another process is writing this output."""


def lock_path(target: str | Path) -> Path:
    """The lock of an output: `FOLDER/.realness.lock` for a folder, `FILE.lock` beside a file."""
    target = Path(target)
    return target / ".realness.lock" if target.is_dir() else target.with_name(target.name + ".lock")


@contextlib.contextmanager
def one_writer(target: str | Path, command: str = ""):
    """Hold the one-writer lock of output `target` (an existing folder, or a file) for the block.

    A second writer fails at once with `OutputBusy`, naming the output and the holder (pid, host,
    command, since when). The lock is the kernel's (`filelock`: flock on Unix), so a holder that is
    killed, even with SIGKILL, releases it with its last file descriptor: a stale lock file never
    blocks a rerun. The holder's details live beside it in `<lock>.owner`, for the message only.
    """
    import socket
    import sys
    import time

    from filelock import FileLock, Timeout

    path = lock_path(target)
    owner = path.with_name(path.name + ".owner")
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            held = json.loads(owner.read_text())
            holder = (f"pid {held.get('pid')} on {held.get('host')} since {held.get('since')}"
                      + (f" ({held['command']})" if held.get("command") else ""))
        except (OSError, ValueError):
            holder = "another process"
        raise OutputBusy(f"{target}: another writer holds it: {holder}; wait for it to finish, or choose another output") from None
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": command or " ".join(sys.argv[:1] + sys.argv[1:4])}
        with contextlib.suppress(OSError):
            owner.write_text(json.dumps(info))
        yield path
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()


def sha256_file(path: Path) -> str:
    """The file's SHA-256 (hex): what resumable jobs and the gate key images by."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
