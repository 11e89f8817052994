import os

# The Triton interpreter runs tl.dot through numpy; multi-threaded OpenBLAS on small tiles is several
# times slower than one thread on this size of machine. Must be set before numpy is loaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Without a GPU the Triton kernels run on the CPU through the interpreter; it must be switched on
# before triton decorates the kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _network() -> tuple:
    """(whether the package registries can be reached, why not). ``MCLNER_NETWORK=1``/``0`` decides;
    otherwise one TCP connection to pip's index host (``PIP_INDEX_URL``, else pypi.org), or to the
    HTTPS proxy when one is set, within 3 seconds."""
    import socket
    from urllib.parse import urlsplit

    forced = os.environ.get("MCLNER_NETWORK")
    if forced in ("0", "1"):
        return forced == "1", "MCLNER_NETWORK=0"
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple")
    host, port = url.hostname or "pypi.org", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return False, f"{host}:{port} unreachable ({exc.strerror or type(exc).__name__})"
    return True, ""


_DESELECTED: dict = {}


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    # @network tests (the package registries) are deselected where there is no network; the summary
    # says how many and why
    wanted = [item for item in items if "network" in item.keywords]
    if wanted:
        ok, why = _network()
        if not ok:
            config.hook.pytest_deselected(items=wanted)
            items[:] = [item for item in items if "network" not in item.keywords]
            _DESELECTED.update(count=len(wanted), why=why)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------ CUDA kernels under emulation (scripts/cuda_emulate.sh)
_EMU_OUTCOMES: dict = {}


@pytest.fixture(autouse=True)
def _emulated_case():
    import mclner_helpers as helpers

    helpers.EMULATED["active"] = None
    yield
    helpers.EMULATED["active"] = None


def pytest_runtest_logreport(report):
    import mclner_helpers as helpers

    if report.nodeid in helpers.EMULATED["tests"] and (report.when == "call" or report.outcome != "passed"):
        _EMU_OUTCOMES[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter):
    import mclner_helpers as helpers

    from mclner import _native

    write = terminalreporter.write_line
    if _DESELECTED:
        write(f"network: {_DESELECTED['count']} @network test(s) deselected: {_DESELECTED['why']} "
              "(MCLNER_NETWORK=1 runs them)")
    if not _native.cuda_emulated():
        why = os.environ.get("MCLNER_CUDA_EMULATE_SKIPPED") or "MCLNER_CUDA_EMULATE is not set"
        write(f"CUDA emulation: not active ({why})")
        return
    counts: dict = {}
    for outcome in _EMU_OUTCOMES.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none run"
    emulator = _native.cuda_module().emulator
    write(f"CUDA emulation ({emulator}): {len(_EMU_OUTCOMES)} CUDA test cases run on the CPU ({summary})")
    for dtype, w in sorted(helpers.EMULATED["errors"].items()):
        write(
            f"CUDA emulation worst {dtype} ({w['checks']} outputs/gradients): scaled error {w['scaled'][0]:.2e} "
            f"[{w['scaled'][1]}]; error/bound {w['of_bound'][0]:.2f} [{w['of_bound'][1]}]"
        )


# ----------------------------------------------------------------------------- shared fixtures
# (their building blocks, the synthetic en→zh task and the tiny encoder, are in tests/mclner_fixtures.py)


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
    """A tiny Hugging Face encoder folder (1-layer BERT, hidden 32, the synthetic task's tokenizer)."""
    from mclner_fixtures import make_tiny_encoder_dir

    return make_tiny_encoder_dir(tmp_path_factory.mktemp("enc") / "tiny")


@pytest.fixture(scope="session")
def task_files(tmp_path_factory):
    """(root, paths): the synthetic task as CoNLL files (en train/dev/test, zh train/test), a lexicon
    file and the tiny encoder folder, as `mclner train` reads them."""
    from mclner_golden_losses import make_inputs

    root = tmp_path_factory.mktemp("task")
    return root, make_inputs(root)
