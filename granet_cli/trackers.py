"""Experiment trackers: per-epoch metrics of `granet run` and `granet sweep` into TensorBoard.

Optional: needs the `tensorboard` package (``pip install 'granet-cli[trackers]'``); torch's own
``torch.utils.tensorboard.SummaryWriter`` writes the event files. The sweeps' W&B and MLflow
trackers (Ray Tune's logger callbacks) are in `sweep/trackers.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .store.columns import EPOCH_TAGS as _COLUMN_TAGS


class TrackerError(RuntimeError):
    """A tracker cannot be used (package missing, folder not writable): one line."""


#: epochs row key -> tracker tag (defined with the columns, in granet_cli/store/columns.py)
EPOCH_TAGS = _COLUMN_TAGS


def require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise TrackerError(
            "--tensorboard needs the tensorboard package, which is not installed "
            "(pip install tensorboard, or pip install 'granet-cli[trackers]')"
        ) from None


class TensorBoardLogger:
    """One event-file folder per run: `<log_dir>/<run_id>/`; scalars are indexed by epoch, mask
    updates (dropped / grown / density after the update) by optimizer step."""

    def __init__(self, log_dir: str | Path, run_id: str, hparams: dict[str, Any] | None = None):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(log_dir) / run_id
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(self.path))
        except OSError as e:
            raise TrackerError(f"--tensorboard {log_dir}: cannot write ({e.strerror or e})") from None
        if hparams:
            text = "\n".join(f"    {k}: {v}" for k, v in hparams.items())
            self.writer.add_text("run", text, 0)

    def log_epoch(self, row: dict[str, Any], updates: list[dict[str, Any]] | None = None) -> None:
        epoch = int(row["epoch"])
        for key, tag in EPOCH_TAGS.items():
            value = row.get(key)
            if value is not None:
                self.writer.add_scalar(tag, float(value), epoch)
        for u in updates or []:
            step = int(u["step"])
            for key in ("dropped", "grown", "reselected"):
                if u.get(key) is not None:
                    self.writer.add_scalar(f"mask_updates/{key}", float(u[key]), step)
            if u.get("density") is not None:
                self.writer.add_scalar("mask_updates/density", float(u["density"]), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
