"""Atomic folders and files.

A folder is written under a temporary name next to its destination and renamed into place. Replacing
an existing folder takes two renames (``dest`` -> ``.dest.old-*``, ``.dest.tmp-*`` -> ``dest``); a
process killed between them leaves no ``dest`` but a complete ``.dest.old-*``, which every reader
(:func:`recover_dir`) renames back before it looks at the folder, and leftovers are removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, List, Optional


def fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync directories
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush a finished folder before it is renamed into place (a crash of the machine, not only of
    the process, then finds either the old or the complete new folder)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def tmp_sibling(dest: Path) -> Path:
    """A fresh temporary name beside ``dest`` (``.dest.tmp-<8 hex>``), as :func:`recover_tree` knows it."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")


def _leftovers(dest: Path, kind: str) -> List[Path]:
    if not dest.parent.is_dir():
        return []
    return sorted(dest.parent.glob(f".{dest.name}.{kind}-*"), key=lambda p: p.stat().st_mtime, reverse=True)


def recover_dir(dest: Path, clean: bool = False, keep: Optional[Path] = None) -> bool:
    """Repair what a killed :func:`atomic_replace_dir` left: without ``dest``, the newest
    ``.dest.old-*`` (a complete folder: it was ``dest``) becomes ``dest`` again. With ``clean`` (writers
    and the run-folder sweep at ``--resume``, which hold the run's lock) stale ``.dest.old-*`` /
    ``.dest.tmp-*`` leftovers are removed too (except ``keep``, the writer's own); mere readers leave
    them, as a writer may be at work. True when ``dest`` exists afterwards."""
    dest = Path(dest)
    if not dest.exists():
        for old in _leftovers(dest, "old"):
            try:
                os.replace(old, dest)
                break
            except OSError:  # another process (a DDP rank) recovered it first
                if dest.exists():
                    break
    if clean and dest.exists():
        for stale in _leftovers(dest, "old") + _leftovers(dest, "tmp"):
            if keep is not None and stale.name == Path(keep).name:
                continue
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return dest.exists()


_LEFTOVER = re.compile(r"^\.(.+)\.(old|tmp)-[0-9a-f]{8}$")


def recover_tree(root: Path) -> List[str]:
    """:func:`recover_dir` for every interrupted replacement under ``root`` (a run folder at
    ``--resume``, under its lock), then removal of every leftover ``.*.tmp-*`` (never a complete
    folder in use). Returns what was restored or removed, for the log."""
    done: List[str] = []
    root = Path(root)
    if not root.is_dir():
        return done
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        for name in sorted(dirs + files):
            m = _LEFTOVER.match(name)
            if not m:
                continue
            if m.group(2) == "old" and not (here / m.group(1)).exists() and (here / name).is_dir():
                recover_dir(here / m.group(1))
                done.append(f"restored {here / m.group(1)} from {name}")
            if (here / name).exists():
                p = here / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                done.append(f"removed {p}")
        dirs[:] = [d for d in dirs if not _LEFTOVER.match(d)]
    return done


def atomic_replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder `tmp` to `dest`, replacing an older `dest` (one rename each; a kill
    between the two renames is repaired by :func:`recover_dir`)."""
    tmp, dest = Path(tmp), Path(dest)
    recover_dir(dest, clean=True, keep=tmp)
    fsync_tree(tmp)
    olds = []
    for _attempt in range(3):
        if dest.exists():
            olds.append(dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}"))
            os.replace(dest, olds[-1])
        try:
            os.replace(tmp, dest)
            break
        except OSError:  # a reader's recover_dir put the old folder back in between: once more
            if not dest.exists() or _attempt == 2:
                raise
    fsync_path(dest.parent)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON under a temporary name and rename it into place: a reader never sees half a file."""
    path = Path(path)
    tmp = tmp_sibling(path)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, default=float))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
