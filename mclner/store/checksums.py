"""``checksums.json``: the SHA-256 of every file of a folder, written last (its presence marks a
complete folder), and the check of files against it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, Optional

from mclner.errors import UserError

CHECKSUMS = "checksums.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def write_checksums(folder: Path) -> None:
    """Record the SHA-256 of every file in ``folder`` (written last: its presence marks a complete
    folder)."""
    folder = Path(folder)
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != CHECKSUMS:
            files[p.relative_to(folder).as_posix()] = sha256_file(p)
    _write(folder, files)


def _write(folder: Path, files: Dict[str, str]) -> None:
    # the sizes let a reader check cheaply on every use and hash once per process (recorded_sizes)
    sizes = {name: (Path(folder) / name).stat().st_size for name in files}
    doc = {"algorithm": "sha256", "files": files, "sizes": sizes}
    (Path(folder) / CHECKSUMS).write_text(json.dumps(doc, indent=2))


def recorded_sizes(folder: Path) -> Optional[Dict[str, int]]:
    """The file sizes ``checksums.json`` records (None when it records none: written by an older mclner)."""
    try:
        sizes = json.loads((Path(folder) / CHECKSUMS).read_text(encoding="utf-8")).get("sizes")
    except (OSError, ValueError, AttributeError):
        return None
    return sizes if isinstance(sizes, dict) else None


def read_checksums(folder: Path, required: bool) -> Optional[Dict[str, str]]:
    """The recorded ``{relative name: SHA-256}`` of ``folder``; None when there is no list and it is not
    ``required`` (a folder written before lists were recorded)."""
    f = Path(folder) / CHECKSUMS
    if not f.is_file():
        if required:
            raise UserError(f"{folder} is incomplete: {CHECKSUMS} is missing")
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise UserError(f"{f}: not a valid checksum list (the folder is corrupt)") from None
    return files


def verify_files(folder: Path, names: Optional[Iterable[str]] = None, required: bool = False) -> None:
    """Check files of ``folder`` against ``checksums.json`` (all recorded ones when ``names`` is None;
    the training state may be absent from a copy); a UserError names the first file that differs."""
    folder = Path(folder)
    recorded = read_checksums(folder, required)
    if recorded is None:
        return
    if names is None:
        refuse_unlisted(folder, recorded)
    todo = list(recorded) if names is None else list(names)
    for name in todo:
        p = folder / name
        if name not in recorded:
            raise UserError(f"{p}: not listed in {folder / CHECKSUMS} (the folder was changed after it was written)")
        if not p.is_file():
            if names is None and name.startswith("training_state."):
                continue  # a model-only copy (e.g. <output-dir>/best) drops the training state
            raise UserError(f"{folder} is incomplete: {name} is missing")
        if sha256_file(p) != recorded[name]:
            raise UserError(
                f"{p}: SHA-256 differs from the one recorded when the folder was written (the file is "
                "corrupt or was changed)"
            )


def refuse_unlisted(folder: Path, recorded: Dict[str, str]) -> None:
    """A UserError naming the first file of ``folder`` that ``checksums.json`` does not list: a folder is
    read only from the files it recorded (transformers would read an added ``special_tokens_map.json``
    and tokenise differently). Links are not followed."""
    folder = Path(folder)
    for dirpath, _dirs, files in os.walk(folder):
        for name in sorted(files):
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if rel != CHECKSUMS and rel not in recorded:
                raise UserError(f"{p}: not listed in {folder / CHECKSUMS} (added after the folder was written); "
                                "mclner reads only the files it recorded: remove it")


def replace_recorded_file(folder: Path, name: str, text: str, required: bool = False) -> None:
    """Write ``text`` as file ``name`` of a folder made of hard links (the link is removed first: never
    written through) and record its new SHA-256 in ``checksums.json`` (also a fresh file)."""
    folder = Path(folder)
    (folder / name).unlink()
    (folder / name).write_text(text, encoding="utf-8")
    recorded = read_checksums(folder, required)
    if recorded is not None:
        recorded[name] = sha256_file(folder / name)
        (folder / CHECKSUMS).unlink()
        _write(folder, recorded)
