"""Per-step losses of the first optimizer steps of every method on the tiny encoder with a fixed
seed, recorded before a refactor and compared after it (`test_golden_losses.py`).

Regenerate (only when a change of the numbers is intended, and say why in the commit):
    PYTHONPATH=. python tests/mclner_golden_losses.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "methods" / "golden_losses.json"

# name -> extra `mclner train` options; every case trains 4 steps per stage on the same files.
_MCLNER = ["--method", "mclner", "--self-training-rounds", "1", "--st-threshold", "0", "--biaffine-dim", "16",
           "--cln-hidden", "16", "--proj-dim", "8", "--tc-max-pairs", "64"]
# Each case names its op implementation: the default (auto) depends on what is built.
CASES: Dict[str, List[str]] = {
    "mclner-reference": [*_MCLNER, "--impl", "reference"],
    "mclner-fused": [*_MCLNER, "--fused"],
    # the paper's plain-mean L_ce (the default before --none-weight became 0.1)
    "mclner-plain-ce": [*_MCLNER, "--impl", "reference", "--none-weight", "1"],
    "token-classification": ["--method", "token-classification", "--impl", "reference"],
}


def make_inputs(root: Path) -> Dict[str, str]:
    sys.path.insert(0, str(HERE))
    from mclner_fixtures import LEX, make_tiny_encoder_dir, synthetic_en, synthetic_zh, write_conll

    for split, n, seed in (("train", 24, 0), ("dev", 8, 1), ("test", 8, 2)):
        write_conll(root / "en" / f"{split}.txt", synthetic_en(n, seed))
    write_conll(root / "zh" / "test.txt", synthetic_zh(8, 3))
    write_conll(root / "zh" / "train.txt", synthetic_zh(16, 4))
    lex = root / "lex.txt"
    lex.write_text("".join(f"{k} {v}\n" for k, v in LEX.items()), encoding="utf-8")
    return {"enc": make_tiny_encoder_dir(root / "enc"), "lex": str(lex), "en": str(root / "en"),
            "zh": str(root / "zh")}


def run_case(root: Path, inputs: Dict[str, str], name: str) -> List[Dict[str, float]]:
    """The loss records (stage, step, every loss term) of one case's log.jsonl."""
    from mclner.cli import main

    out = root / name
    rc = main([
        "train", "--source", inputs["en"], "--target", inputs["zh"], "--target-lang", "zh",
        "--lexicon", inputs["lex"], "--encoder", inputs["enc"], "--output-dir", str(out),
        "--max-steps", "4", "--batch-size", "4", "--effective-batch-size", "8", "--eval-every", "4",
        "--encoder-lr", "1e-3", "--head-lr", "3e-3", "--no-progress", "--seed", "3", *CASES[name],
    ])
    assert rc == 0, f"{name}: mclner train exited {rc}"
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    keep = []
    for r in recs:
        if "loss" in r and "step" in r:
            keep.append({k: v for k, v in r.items() if k in ("stage", "step") or _is_loss(k, v)})
    return keep


def _is_loss(key: str, value) -> bool:
    return isinstance(value, float) and not key.startswith(("lr_", "elapsed", "grad_norm"))


def main() -> None:
    import tempfile

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = make_inputs(root)
        result = {name: run_case(root, inputs, name) for name in CASES}
    if "--write" in sys.argv:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {GOLDEN}")
    else:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
