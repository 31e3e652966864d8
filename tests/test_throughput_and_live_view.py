"""Numbers a user reads while training: the resumed run's samples per second (only the samples this
process trained, over the time it trained them) and the sweep's live "best" (the final accuracy,
not the optimistic best over epochs)."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

import pytest

from granet_cli import train
from granet_cli.data import dataset_info
from granet_cli.spec import load_run_spec

from .conftest import QUICKSTART

EPOCHS, CUT = 5, 3


@pytest.mark.slow
def test_resumed_run_counts_only_its_own_samples_and_time(tmp_path):
    spec = load_run_spec(
        QUICKSTART, [f"optim.epochs={EPOCHS}", "sparsity.final_prune_epoch=4", "sparsity.update_frequency=7"]
    )
    n_train = dataset_info(**spec.data.model_dump()).train_size

    class Stop(Exception):
        pass

    def stop(row, updates):
        if row["epoch"] == CUT:
            raise Stop

    with pytest.raises(Stop):
        train.run(spec, tmp_path / "cut", on_epoch=stop)
    t0 = time.perf_counter()
    resumed = train.run(spec, tmp_path / "cut", resume=True)
    call = time.perf_counter() - t0
    trained = [r for r in resumed.epochs if r["epoch"] > CUT]  # the epochs this process trained
    assert [r["epoch"] for r in trained] == list(range(CUT + 1, EPOCHS + 1))
    samples = len(trained) * n_train
    sps = resumed.final["samples_per_second"]
    # its time lies between the epochs' own training time and the whole call: counting the
    # checkpointed epochs' samples too (5 epochs' worth) would break the upper bound
    assert samples / call <= sps <= samples / sum(r["seconds"] for r in trained) * (1 + 1e-9)
    # the wall time spans both processes: at least every epoch's training time
    assert resumed.final["wall_seconds"] >= sum(r["seconds"] for r in resumed.epochs)


def _trial(label: str, status: str, final: float | None):
    from granet_cli.sweep.plan import TrialOutcome

    point = SimpleNamespace(label=label)
    return TrialOutcome(point=point, status=status, final={"final_test_acc": final, "wall_seconds": 1.0})  # type: ignore[arg-type]


def test_live_sweep_line_shows_the_best_final_accuracy():
    from rich.console import Console

    from granet_cli.sweep.view import Display

    buf = io.StringIO()
    display = Display(Console(file=buf, width=200), SimpleNamespace(name="s"), 2, None)  # type: ignore[arg-type]
    a, b = _trial("granet d=0.1 s=0", "completed", 0.9800), _trial("rigl d=0.1 s=0", "completed", 0.9700)
    display.epoch(a, 0.9822)  # an epoch's accuracy above the final one: optimistic, not shown as best
    assert "best final test acc -" in display._info()
    display.finished(a)
    display.epoch(b, 0.9900)
    display.finished(b)
    info = display._info()
    assert "best final test acc 98.00 % (granet d=0.1 s=0)" in info and "98.22" not in info and "99.00" not in info
    assert "final test acc 98.00 %" in buf.getvalue()
