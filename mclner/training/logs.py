"""What a run writes and prints: ``log.jsonl`` (every optimizer step's loss terms, evaluations, the
methods' and the engine's events), TensorBoard scalars when it is installed, and one-line messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from mclner.store.jsonl import JsonlAppender
from mclner.training.guards import json_safe


class RunLog:
    """The main process's log. Records logged before :meth:`open` (while the data is prepared, before
    the run folder may be written) are kept and written on :meth:`flush`; a record's ``message`` is
    printed at once through ``say``. Other processes neither write nor print."""

    def __init__(self, enabled: bool, say: Callable[[str], None] = print) -> None:
        self.enabled = enabled
        self.say = say
        self.f: Any = None
        self.tb: Any = None
        self.pending: List[Dict[str, Any]] = []

    def open(self, out_dir: Path) -> None:
        if not self.enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.f = JsonlAppender(out_dir / "log.jsonl")  # a torn last line of a killed run is repaired first
        if self.f.repaired:
            self.say(f"note: {self.f.repaired}")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def log(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        if record.get("message"):
            self.say(str(record["message"]))
        if self.f is None:
            self.pending.append(record)
            return
        self._write(record)

    def flush(self) -> None:
        """Write the records kept since before the file was opened."""
        pending, self.pending = self.pending, []
        for record in pending:
            self._write(record)

    def _write(self, record: Dict[str, Any]) -> None:
        self.f.append(json_safe(record))  # valid JSON: no bare NaN/Infinity
        if self.tb is not None and "step" in record:
            prefix = record.get("stage", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def method_log(log: Optional[RunLog]) -> Callable[[Dict[str, Any]], None]:
    """`Context.log` for a method: its records go to the run's log (default event ``note``)."""
    def emit(record: Dict[str, Any]) -> None:
        if log is not None:
            log.log({"event": "note", **record})

    return emit


def duration(seconds: float) -> str:
    """``1h02m`` or ``3m05s``; ``?`` when unknown."""
    import math

    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def banner(cfg: Any, method: Any, data: Any, env: Any, impl: str, selected: Dict[str, str], impl_kept: bool,
           out: Path) -> List[str]:
    """The two lines a run starts with: method, stages, device and implementation; the data and the
    output folder."""
    if impl == "auto" and selected.get("biaffine"):
        impl = f"auto ({selected['biaffine']} here)"
    if impl_kept:
        impl += " (the run's own: --resume keeps it)"
    stages = ", ".join(s.name for s in method.stages())
    place = f"{env.device}" + (f" x {env.world} processes" if env.distributed else "")
    sizes = [f"{len(data.train)} source train", f"{len(data.dev)} dev", f"{len(data.target_test)} target test"]
    if data.target_unlabeled:
        sizes.append(f"{len(data.target_unlabeled)} unlabelled target")
    return [f"mclner train: method {method.name} (stages: {stages}); device {place}; impl {impl}; "
            f"encoder {cfg.encoder}",
            f"data: {', '.join(sizes)} sentences; types {', '.join(data.label_map.types)}; output {out.resolve()}"]


def where(out: Path) -> List[str]:
    """The lines a finished run ends with: where the model, the results and the log are."""
    return [f"done. best model: {out / 'best'} (mclner predict {out / 'best'} --text '...')",
            f"results: {out / 'results.json'}; log: {out / 'log.jsonl'}; stages: {out / 'stages'}/*/best, last",
            f"plots and report: mclner report {out}"]
