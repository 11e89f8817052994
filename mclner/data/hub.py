"""Whether the Hugging Face hub can be reached, asked once per process in a few seconds, so that a data
set name without network fails (or loads from the local cache) at once instead of after the HTTP
client's retries."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator, Optional
from urllib.parse import urlparse

_REACHABLE: Optional[bool] = None
PROBE_TIMEOUT_S = 3.0
_TRUE = ("1", "on", "yes", "true")


def offline_requested() -> bool:
    """The user asked for offline mode (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connection to the hub (``HF_ENDPOINT``, default huggingface.co:443) within ``timeout``
    seconds; remembered for the process."""
    global _REACHABLE
    if _REACHABLE is None:
        url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        host = url.hostname or "huggingface.co"
        port = url.port or (80 if url.scheme == "http" else 443)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                _REACHABLE = True
        except OSError:
            _REACHABLE = False
    return _REACHABLE


@contextlib.contextmanager
def offline_unless_reachable() -> Iterator[bool]:
    """Run the body in the libraries' offline mode (local cache only) when the hub cannot be reached;
    yields whether it is offline. The flags the libraries read at import time are set for the body
    only and restored after."""
    if offline_requested() or hub_reachable():
        yield offline_requested()
        return
    patched = []
    try:
        import datasets.config as dcfg

        patched.append((dcfg, "HF_HUB_OFFLINE", getattr(dcfg, "HF_HUB_OFFLINE", False)))
        dcfg.HF_HUB_OFFLINE = True
        if hasattr(dcfg, "HF_DATASETS_OFFLINE"):
            patched.append((dcfg, "HF_DATASETS_OFFLINE", dcfg.HF_DATASETS_OFFLINE))
            dcfg.HF_DATASETS_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass
    try:
        import huggingface_hub.constants as hcon

        patched.append((hcon, "HF_HUB_OFFLINE", hcon.HF_HUB_OFFLINE))
        hcon.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass
    try:
        yield True
    finally:
        for mod, name, old in reversed(patched):
            setattr(mod, name, old)
