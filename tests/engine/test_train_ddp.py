"""`torchrun --nproc_per_node 2 -m mclner train` on the CPU (gloo): a few DDP steps, rank-0 logging
and checkpointing, identical weights on both ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from mclner_fixtures import LEX, make_tiny_encoder_dir, synthetic_en, synthetic_zh, write_conll

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_cedict(path: Path) -> None:
    """The synthetic lexicon as CC-CEDICT lines (Trad Simp [pinyin] /gloss/)."""
    with open(path, "w", encoding="utf-8") as f:
        for en, zh in LEX.items():
            f.write(f"{zh} {zh} [x] /{en}/\n")


def test_torchrun_two_processes(tmp_path):
    enc = make_tiny_encoder_dir(tmp_path / "enc")
    for split, n, seed in (("train", 32, 0), ("dev", 8, 1)):
        write_conll(tmp_path / "en" / f"{split}.txt", synthetic_en(n, seed))
    write_conll(tmp_path / "zh" / "test.txt", synthetic_zh(8, 3))
    lex = tmp_path / "lex.txt"
    write_cedict(lex)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "mclner", "train", "--source", str(tmp_path / "en"), "--target", str(tmp_path / "zh"),
        "--lexicon", str(lex), "--encoder", enc, "--output-dir", str(out), "--max-steps", "4",
        "--batch-size", "4", "--effective-batch-size", "16", "--eval-every", "2", "--biaffine-dim", "16",
        "--cln-hidden", "16", "--proj-dim", "8", "--no-progress", "--device", "cpu", "--self-training-rounds", "0",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]  # rank 0 logs each step once
    assert {"ce_src", "ce_cs", "sc", "tc"} <= set(steps[0])
    assert sum(1 for r in rows if r.get("event") == "eval") == 2
    assert (out / "best" / "model.safetensors").is_file()
    from mclner.training.state_codec import load_training_state

    ts = load_training_state(out / "stages" / "source" / "last")
    assert ts["counters"]["step"] == 4
    # 32 sentences / (4 per micro-batch × 2 ranks) = 4 micro-batches per rank = 2 optimizer steps per
    # epoch (accumulation 16 / (4 × 2) = 2): step 4 ends the second epoch's last batch
    assert ts["counters"]["epoch"] == 1 and ts["counters"]["batch_pos"] == 4
