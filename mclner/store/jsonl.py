"""Append-only JSON-lines files (a run's ``log.jsonl``) that survive a kill.

Framing: one JSON object per line, each record written with a single ``write`` on a file opened
for appending, its newline last. A process killed mid-write leaves at most one torn last line
without its newline. The writer repairs that before it appends (a complete record missing only
its newline gets it, a torn one is cut off), so the next record never glues onto half a line; a
reader skips a torn last line with a warning. Any other line that is not a JSON object is an
error naming the file and line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from mclner.errors import UserError

PathLike = Union[str, Path]


def _record(raw: bytes) -> Optional[Dict[str, Any]]:
    """The JSON object on one line, or None when the line is not one."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) else None


def repair_tail(path: PathLike) -> Optional[str]:
    """End ``path`` at a record boundary (see the module doc); what was done, or None when nothing was."""
    path = Path(path)
    try:
        f = open(path, "rb+")
    except FileNotFoundError:
        return None
    with f:
        size = f.seek(0, os.SEEK_END)
        pos, buf = size, b""
        while pos > 0 and b"\n" not in buf:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
        nl = buf.rfind(b"\n")
        tail = buf[nl + 1:]
        if not tail:
            return None
        if _record(tail) is not None:  # killed between the record and its newline
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
            return f"{path}: completed the last record (its newline was missing)"
        f.truncate(pos + nl + 1)
        return f"{path}: removed a torn last line ({len(tail)} bytes, written when a run was killed)"


class JsonlAppender:
    """Appends JSON records to ``path`` with the framing of the module doc (the tail repaired first)."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.repaired = repair_tail(self.path)
        self.fd: Optional[int] = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def append(self, record: Dict[str, Any]) -> None:
        data = (json.dumps(record) + "\n").encode("utf-8")
        if self.fd is None:
            raise ValueError(f"{self.path}: appending to a closed log")
        view = memoryview(data)
        while view:  # one write in practice; a short write (a signal) continues where it stopped
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_jsonl(path: PathLike) -> List[Dict[str, Any]]:
    """The records of a JSON-lines file. A torn last line (no newline, not a whole record: the writer
    was killed) is skipped with a warning; any other line that is not a JSON object, and a file that
    cannot be read, is a UserError naming the file (and line)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a JSON-lines file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    if complete:
        lines.pop()
    records = []
    for k, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        rec = _record(raw)
        if rec is not None:
            records.append(rec)
            continue
        if k == len(lines) and not complete:
            logging.getLogger("mclner").warning(
                "warning: %s:%d: skipped a torn last line (%d bytes; the writer was killed while writing it)",
                path, k, len(raw))
            continue
        try:
            json.loads(raw.decode("utf-8"))
            why = "not a JSON object"
        except UnicodeDecodeError:
            why = "not UTF-8 text (is it a JSON-lines file?)"
        except (ValueError, RecursionError) as exc:
            why = f"not a JSON record ({getattr(exc, 'msg', type(exc).__name__)})"
        raise UserError(f"{path}:{k}: {why}")
    return records
