"""Copies made of hard links (a checkpoint copied to ``best/``, stages reused from another run) and
file modes that follow the user's umask."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mclner.errors import UserError


def link_or_copy(src: str, dst: str) -> None:
    """A ``copy_function`` for :func:`shutil.copytree`: a hard link, or a copy where links cannot be
    made (another file system). Whoever changes a file of such a copy unlinks it first."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def umask() -> int:
    """The process's umask (read without changing it where /proc tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give every file and folder under ``folder`` the modes the user's umask asks for (0666/0777 minus
    it): some writers (safetensors) create their files 0600 whatever the umask."""
    mask = umask()
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            os.chmod(Path(dirpath) / name, 0o666 & ~mask)
        os.chmod(dirpath, 0o777 & ~mask)


def refuse_links_out(root: Path, what: str) -> None:
    """A UserError naming the first symbolic link under ``root`` that leads outside it, nowhere, or in
    a loop (to a folder that holds the link: copied by following links, it nests without end): a
    folder mclner reads (a checkpoint, a reused stage) is read from its own files only. Links are
    never followed while looking; ``root`` itself may be a link."""
    root = Path(root)
    real_root = Path(os.path.realpath(root))
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = Path(dirpath) / name
            if not p.is_symlink():
                continue
            try:
                target = Path(os.path.realpath(p, strict=True))
            except (OSError, RuntimeError):
                raise UserError(f"{p}: a symbolic link that leads nowhere or in a loop, inside the {what}") from None
            if target != real_root and real_root not in target.parents:
                raise UserError(f"{p}: a symbolic link to {target}, outside the {what} (it is read only from its own "
                                "files)")
            here = Path(os.path.realpath(p.parent))
            if target == here or target in here.parents:
                raise UserError(f"{p}: a symbolic link to {target}, a folder that holds it (a loop), inside the {what}")
