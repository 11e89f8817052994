"""Fused training resumes bit-exactly (issue 10, item 6): a `--fused` run of the mclner method stopped
after step 7 (the last checkpoint is step 6) and resumed ends with the weights of an uninterrupted
`--fused` run, bit for bit, with the native CPU kernels on 2 threads. Exactness needs a fused CPU
backward whose reductions do not depend on the thread schedule."""

from __future__ import annotations

import pytest
import torch
from mclner_golden_losses import make_inputs
from safetensors.torch import load_file
from test_method_contract import _args

from mclner.ops import available_impls


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the native kernels use torch's thread count
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(not available_impls()["cpu"]["runnable"], reason="native CPU module not built")
def test_fused_resume_is_exact(tmp_path, two_threads):
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args
    from mclner.training.trainer import train

    paths = make_inputs(tmp_path)
    runs = {}
    for name in ("full", "cut"):
        extra = ("--fused", "--self-training-rounds", "0", "--save-every", "2")
        runs[name] = config_from_args(build_parser().parse_args(_args(paths, tmp_path / name, "mclner", *extra)))
    assert runs["full"].fused
    train(runs["full"])
    runs["cut"].stop_after_steps = 7
    assert train(runs["cut"]).get("interrupted")
    runs["cut"].stop_after_steps = None
    train(runs["cut"], resume=True)
    full, cut = tmp_path / "full", tmp_path / "cut"
    for ckpt in ("stages/source/last", "best"):
        a = load_file(str(full / ckpt / "model.safetensors"))
        b = load_file(str(cut / ckpt / "model.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (ckpt, k, (a[k] - b[k]).abs().max().item())
