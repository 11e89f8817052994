"""Exact resume under DDP (issue 10, item 14): two gloo processes stopped after step 5 (the last
checkpoint is step 4) and resumed end with the weights of an uninterrupted two-process run, bit for
bit. Each rank draws its own dropout masks, so every rank's RNG state must be saved and restored."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from mclner_fixtures import make_tiny_encoder_dir, synthetic_en, synthetic_zh, write_conll
from safetensors.torch import load_file
from test_train_ddp import ROOT, _free_port, write_cedict

# Runs under torchrun: "first FULL CUT args..." trains FULL uninterrupted, then CUT stopped after step
# 5 as if killed; "resume CUT args..." resumes CUT (a fresh pair of processes).
SCRIPT = textwrap.dedent("""
    import sys
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args
    from mclner.training.trainer import train

    def cfg(out, rest):
        return config_from_args(build_parser().parse_args(rest + ["--output-dir", out]))

    mode = sys.argv[1]
    if mode == "first":
        train(cfg(sys.argv[2], sys.argv[4:]))
        c = cfg(sys.argv[3], sys.argv[4:])
        c.stop_after_steps = 5
        assert train(c).get("interrupted")
    else:
        train(cfg(sys.argv[2], sys.argv[3:]), resume=True)
""")


def _torchrun(tmp_path, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(tmp_path / "run_ddp.py"), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ddp_resume_is_exact(tmp_path):
    enc = make_tiny_encoder_dir(tmp_path / "enc")
    for split, n, seed in (("train", 32, 0), ("dev", 8, 1)):
        write_conll(tmp_path / "en" / f"{split}.txt", synthetic_en(n, seed))
    write_conll(tmp_path / "zh" / "test.txt", synthetic_zh(8, 3))
    lex = tmp_path / "lex.txt"
    write_cedict(lex)
    (tmp_path / "run_ddp.py").write_text(SCRIPT)
    full, cut = tmp_path / "full", tmp_path / "cut"
    # 32 sentences / (4 × 2 ranks) = 4 micro-batches per rank, accumulation 2: 2 steps per epoch, each
    # epoch ends with an evaluation and a resumable checkpoint (steps 2, 4, 6)
    args = ["train", "--source", str(tmp_path / "en"), "--target", str(tmp_path / "zh"), "--lexicon", str(lex),
            "--encoder", enc, "--max-steps", "6", "--batch-size", "4", "--effective-batch-size", "16",
            "--biaffine-dim", "16", "--cln-hidden", "16", "--proj-dim", "8", "--no-progress", "--device", "cpu",
            "--self-training-rounds", "0", "--seed", "3"]
    _torchrun(tmp_path, "first", str(full), str(cut), *args)
    from mclner.training.state_codec import load_training_state

    ts = load_training_state(cut / "stages" / "source" / "last")
    assert ts["counters"]["step"] == 4
    ranks = ts["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    _torchrun(tmp_path, "resume", str(cut), *args)
    stages = sorted(p.name for p in (full / "stages").iterdir())
    assert stages == sorted(p.name for p in (cut / "stages").iterdir()) and stages
    for ckpt in [f"stages/{s}/last" for s in stages] + ["best"]:
        a = load_file(str(full / ckpt / "model.safetensors"))
        b = load_file(str(cut / ckpt / "model.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (ckpt, k)
