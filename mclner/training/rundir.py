"""The output folder of a training run: what may be deleted, and one run at a time.

- A *run folder* is one mclner wrote: it holds the marker file ``.mclner-run`` whose JSON says
  ``"format": "mclner-run"`` (runs of an mclner that wrote no marker yet: a checkpoint whose
  ``config.json`` says ``"format": "mclner-checkpoint"`` under ``stages/*/`` or ``best/``). File names
  that other tools write too (``training_args.json``, ``log.jsonl``) never make a folder a run folder.
- ``--overwrite`` removes only the entries mclner writes (:data:`RUN_ENTRIES`), and only after the
  run's options, data and encoder were checked; a non-empty folder that is not a run folder is
  refused, so a mistyped ``--output-dir`` never deletes someone's files.
- While a run (or ``--resume``) works in a folder it holds an exclusive ``flock`` on
  ``.mclner.lock`` there, whose text names the holder (PID, host, start time); a second run gets a
  one-line error. The kernel drops the lock when the process dies, even by ``kill -9``, so a lock
  is never stale on a local file system; the PID/host text serves the error message (and says
  when the holder looks dead, e.g. on a network file system without working locks).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional

from mclner.errors import UserError
from mclner.store.atomic import write_json_atomic

MARKER = ".mclner-run"
LOCK = ".mclner.lock"
# Everything a run writes in its folder (top level); --overwrite deletes these and nothing else.
RUN_ENTRIES = ("stages", "best", "log.jsonl", "results.json", "training_args.json", "tensorboard", ".best.tmp",
               MARKER)
_RUN_PREFIXES = (".best.old-", ".best.tmp-", ".results.json.tmp-", ".training_args.json.tmp-", ".mclner-run.tmp-")


MARKER_FORMAT = "mclner-run"


def _json_field(f: Path, key: str) -> Any:
    """``key`` of the small JSON object in file ``f`` (None when it is not one)."""
    try:
        if f.is_symlink() or not f.is_file() or f.stat().st_size > 1 << 20:
            return None
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def is_run_dir(path: Path) -> bool:
    """Whether mclner marked ``path`` as its run folder (see the module doc)."""
    from mclner.inference.checkpoint import FORMAT

    path = Path(path)
    if _json_field(path / MARKER, "format") == MARKER_FORMAT:
        return True
    stages = path / "stages"
    ckpts = [path / "best"] + ([c for s in sorted(stages.iterdir()) if s.is_dir() for c in (s / "last", s / "best")]
                               if stages.is_dir() and not stages.is_symlink() else [])
    return any(_json_field(c / "config.json", "format") == FORMAT for c in ckpts)


RECORD = "training_args.json"


def read_run_record(path: Path) -> Optional[Dict[str, Any]]:
    """The options a run folder recorded (``training_args.json``), None when it has none. A record that
    cannot be read (cut short by an older mclner killed while writing it, edited) is a UserError: the
    options of a resumed run are checked against it, never skipped."""
    f = Path(path) / RECORD
    try:
        if f.stat().st_size > 64 << 20:
            raise UserError(f"{f}: {f.stat().st_size} bytes, too large for a run record")
        rec = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"{f}: not a readable run record ({str(exc)[:80]}); each stage checkpoint keeps a copy "
                        f"(stages/<stage>/last/{RECORD}): put one back to resume") from None
    if not isinstance(rec, dict):
        raise UserError(f"{f}: not a run record (a JSON object)")
    return rec


def write_run_record(path: Path, record: Dict[str, Any]) -> None:
    """Write ``training_args.json`` atomically (a kill never leaves half a record)."""
    write_json_atomic(Path(path) / RECORD, record)


def _foreign_entries(path: Path) -> list:
    return sorted(p.name for p in path.iterdir() if p.name not in (LOCK,))


def check_output_dir(path: Path, resume: bool, overwrite: bool, foreign_only: bool = False) -> None:
    """Validate ``--output-dir`` for a new run, ``--resume`` or ``--overwrite`` without changing it
    (``foreign_only``: only what must be refused before the lock file is put in the folder)."""
    path = Path(path)
    if resume and overwrite:
        raise UserError("--overwrite and --resume exclude each other")
    if path.exists() and not path.is_dir():
        raise UserError(f"--output-dir {path} is a file, not a folder")
    if path.is_dir() and _foreign_entries(path) and not is_run_dir(path):
        entries = _foreign_entries(path)
        raise UserError(
            f"--output-dir {path} is not empty and is not an mclner run folder ({', '.join(entries[:3])}"
            f"{', ...' if len(entries) > 3 else ''}); choose a new or empty folder"
            + ("" if not overwrite else " (--overwrite only deletes mclner run folders)")
        )
    if foreign_only:
        return
    if resume:
        if not (path / "stages").is_dir():
            raise UserError(f"nothing to resume in {path} (no stages/ folder)")
        return
    if not path.exists():
        parent = next((p for p in path.absolute().parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise UserError(f"--output-dir {path}: {parent} is a file, not a folder")
        return
    if not _foreign_entries(path):
        return
    if not overwrite:
        raise UserError(f"output dir {path} already holds a run: pass --resume to continue it or --overwrite to "
                        "start again")


def clear_run(path: Path) -> list:
    """Delete what mclner wrote in the run folder ``path`` (other files stay); returns the names."""
    path = Path(path)
    removed = []
    for p in sorted(path.iterdir()):
        if p.name in RUN_ENTRIES or p.name.startswith(_RUN_PREFIXES):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p.name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run folder, held from :meth:`acquire` to :meth:`release` (or exit)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd: Optional[int] = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock (Windows): runs are not serialised there
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        f = self.path / LOCK
        fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
            except (ValueError, UnicodeDecodeError, OSError):
                holder = {}
            os.close(fd)
            raise UserError(self._busy_message(holder)) from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return self

    def _busy_message(self, holder: Dict[str, Any]) -> str:
        who = ""
        if holder.get("pid"):
            who = f" (pid {holder['pid']} on {holder.get('host', '?')}, since {holder.get('since', '?')})"
        msg = (f"output dir {self.path} is in use by another mclner run{who}; wait for it to end or choose "
               "another --output-dir")
        pid = holder.get("pid")
        if isinstance(pid, int) and holder.get("host") == socket.gethostname() and not _pid_alive(pid):
            msg = (f"output dir {self.path}: the lock {self.path / LOCK} is held although its process {pid} is gone "
                   "(a file system without working locks?); if no run uses the folder, delete the lock file")
        return msg

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (removing it would race)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class RunDir:
    """The output folder of one run on the main process: check, lock, then (after the data and the
    encoder loaded) clear for ``--overwrite`` or repair for ``--resume``."""

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False, main: bool = True) -> None:
        self.path, self.resume, self.overwrite, self.main = Path(path), resume, overwrite, main
        self.lock = RunLock(self.path)
        self.created = False
        self.prepared = False

    def __enter__(self) -> RunDir:
        if self.main:
            self.created = not self.path.exists()
            # a folder of someone else's files is refused before the lock file is put into it; the
            # rest is checked under the lock, so that a running run is reported as such
            check_output_dir(self.path, self.resume, self.overwrite, foreign_only=True)
            self.lock.acquire()
            try:
                check_output_dir(self.path, self.resume, self.overwrite)
            except BaseException:
                self.lock.release()
                raise
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None and self.created and not self.prepared and self.lock.fd is not None:
            # the run failed validation in a folder it created: leave no empty folder behind (the lock
            # file goes while still held, so no second holder of it can exist)
            try:
                (self.path / LOCK).unlink()
                self.path.rmdir()
            except OSError:
                pass
        self.lock.release()

    def prepare(self) -> None:
        """Call once everything is validated, before anything is written to the folder."""
        if not self.main:
            return
        self.prepared = True
        if self.overwrite:
            clear_run(self.path)
        if self.resume:
            from mclner.store.atomic import recover_tree

            for line in recover_tree(self.path):
                print(f"resume: {line}")
        write_json_atomic(self.path / MARKER, {"format": MARKER_FORMAT, "version": 1})
