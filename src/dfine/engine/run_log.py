"""What a training run says: its logging while it runs, and the compact metrics table after each evaluation.

:func:`run_logging` attaches two handlers to the ``dfine`` loggers for the duration of a run (and removes them
after, so nothing global outlives it): the console gets the run's INFO lines (start, resume, stage 2, best
checkpoints, early stop, end, the metrics table) and ``RUN/run.log`` gets the same plus the 12-line COCO block of
every evaluation. ``log.txt`` stays the official one-JSON-record-per-epoch file that tools parse.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["RUN_LOG", "metrics_table", "run_logging"]

RUN_LOG = "run.log"
_TABLE_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class _RunFileHandler(logging.Handler):
    """Appends to ``path`` once its folder exists (the run creates it); lines before that wait in memory, and are
    dropped if the folder never appears (an evaluation-only run, a run that failed to start)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._waiting: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self._waiting.append(self.format(record))
        self.flush()

    def flush(self) -> None:
        if not self._waiting or not self.path.parent.is_dir():
            return
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write("\n".join(self._waiting) + "\n")
            self._waiting.clear()
        except OSError:  # a full disk must not stop training; the console still has every line
            self._waiting.clear()

    def close(self) -> None:
        self.flush()
        super().close()


@contextlib.contextmanager
def run_logging(output_dir: str | Path | None, enabled: bool = True) -> Iterator[None]:
    """Console (INFO) and ``output_dir/run.log`` (DEBUG) handlers on the ``dfine`` logger while the block runs.

    The folder is not created here (the run creates it, with its own error for a bad path). ``enabled`` False
    (ranks other than 0) attaches nothing.
    """
    if not enabled:
        yield
        return
    logger = logging.getLogger("dfine")
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers: list[logging.Handler] = [console]
    if output_dir is not None:
        file = _RunFileHandler(Path(output_dir) / RUN_LOG)
        file.setLevel(logging.DEBUG)
        file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handlers.append(file)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # the lines go here once, not again through a root handler the user set up
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def metrics_table(stats: Mapping[str, float], per_class_ap: Mapping[str, float], max_classes: int = 30) -> str:
    """AP, AP50, AP75, APs/m/l on one line, then per-class AP in columns (``-`` where a class has no ground truth).

    Classes beyond ``max_classes`` are summarised (the full list is in ``eval/metrics.json``).
    """

    def cell(value: float) -> str:
        return f"{value:.3f}" if value >= 0 else "-"

    lines = ["  ".join(f"{name} {cell(stats[name])}" for name in _TABLE_STATS if name in stats)]
    items = list(per_class_ap.items())
    if items:
        width = max(len(name) for name, _ in items[:max_classes])
        shown = [f"{name:>{width}} {cell(ap)}" for name, ap in items[:max_classes]]
        columns = 4
        lines += ["  ".join(shown[k : k + columns]) for k in range(0, len(shown), columns)]
        if len(items) > max_classes:
            rest = [ap for _, ap in items[max_classes:] if ap >= 0]
            mean = f"mean AP {sum(rest) / len(rest):.3f}" if rest else "no ground truth"
            lines.append(f"... {len(items) - max_classes} more classes ({mean})")
    return "\n".join(lines)
