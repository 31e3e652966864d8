"""What a sweep trial sends the driver: every epoch exactly once and in order, batched to at most one
report per REPORT_EVERY_S, but always at a scheduler's rungs, at a checkpoint and at the end.

The trainable runs in this process (a real quickstart `train.run`), with Ray Tune's report,
checkpoint and runtime context replaced by recorders, and its clock by one that advances a fixed
step per reading, so that which epochs share a report is decided by the test, not the machine."""

from __future__ import annotations

import json
from types import SimpleNamespace

from granet_cli.spec import load_run_spec
from granet_cli.sweep import trainable as trainable_module
from granet_cli.sweep.trainable import EPOCHS_KEY, FINAL_KEY

from ..conftest import QUICKSTART

EPOCHS = 7


class SteppingClock:
    """time.monotonic that advances `step` seconds per reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


def run_trial(monkeypatch, tmp_path, *, step: float, report_every: float, checkpoint_every: float, report_at=()):
    """The reports of one trial of the quickstart: [(epochs carried, with a checkpoint?, the result)]."""
    import ray
    from ray import tune

    reports: list[tuple[list[int], bool, dict]] = []

    def report(result, checkpoint=None):
        carried = [row["epoch"] for row, _updates in json.loads(result.get(EPOCHS_KEY, "[]"))]
        reports.append((carried, checkpoint is not None, result))

    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune.Checkpoint, "from_directory", classmethod(lambda cls, path: path))
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "node-1"))
    monkeypatch.setattr(trainable_module, "time", SteppingClock(step))
    monkeypatch.setattr(trainable_module, "REPORT_EVERY_S", report_every)
    spec = load_run_spec(
        QUICKSTART, [f"optim.epochs={EPOCHS}", "sparsity.final_prune_epoch=4", "data.val_fraction=0.1"]
    )
    point = {
        "run_id": "run-1",
        "sweep_id": "sweep-1",
        "name": "trial",
        "spec_hash": spec.spec_hash(),
        "spec_json": json.dumps(spec.normalised()),
        "resume_from": None,
        "threads": 1,
        "checkpoint_every": checkpoint_every,
        "report_at": list(report_at),
    }
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    trainable_module.trainable({"point": point})
    return reports


def carried(reports) -> list[int]:
    return [e for epochs, _, _ in reports for e in epochs]


def test_epochs_are_batched_every_report_interval_and_none_is_lost(monkeypatch, tmp_path):
    # the clock reads 1.0 s later at each epoch (one reading per epoch, two at the start): with reports
    # at most every 2.5 s, each report carries the epochs of 3 readings; checkpoints only at the end
    reports = run_trial(monkeypatch, tmp_path, step=1.0, report_every=2.5, checkpoint_every=1e9)
    assert carried(reports) == list(range(1, EPOCHS + 1))  # every epoch once, in order
    batches = [epochs for epochs, _, _ in reports if epochs]
    assert [len(b) for b in batches[:-1]] == [3] * (len(batches) - 1) and len(batches) < EPOCHS
    epoch_reports = [r for r in reports if r[0]]
    assert [ck for _, ck, _ in epoch_reports] == [False] * (len(epoch_reports) - 1) + [True]
    assert epoch_reports[-1][0][-1] == EPOCHS and epoch_reports[-1][2]["epoch"] == EPOCHS
    final = json.loads(reports[-1][2][FINAL_KEY])
    assert final["status"] == "completed" and reports[-1][0] == []  # nothing left over for the final report


def test_a_schedulers_rungs_are_reported_at_that_epoch(monkeypatch, tmp_path):
    # nothing would be reported before the end but the rungs, each as the last epoch of a report,
    # with its own validation accuracy (what ASHA compares)
    reports = run_trial(monkeypatch, tmp_path, step=0.001, report_every=1e9, checkpoint_every=1e9, report_at=(1, 2, 4))
    epoch_reports = [(epochs, result) for epochs, _, result in reports if epochs]
    assert [epochs for epochs, _ in epoch_reports] == [[1], [2], [3, 4], [5, 6, 7]]
    for epochs, result in epoch_reports:
        rows = json.loads(result[EPOCHS_KEY])
        assert result["epoch"] == epochs[-1] and result["val_acc"] == rows[-1][0]["val_acc"] is not None


def test_report_every_zero_and_a_checkpoint_every_epoch_is_one_report_per_epoch(monkeypatch, tmp_path):
    reports = run_trial(monkeypatch, tmp_path, step=0.001, report_every=0.0, checkpoint_every=0.0)
    epoch_reports = [(epochs, ck) for epochs, ck, _ in reports if epochs]
    assert epoch_reports == [([e], True) for e in range(1, EPOCHS + 1)]


def test_epochs_not_yet_reported_when_a_run_diverges_go_with_its_final_report(monkeypatch, tmp_path):
    """A real run whose loss 'becomes nan' in epoch 4 (raised where train.run checks): epochs 1-3,
    still waiting for the next report, reach the driver with the final one."""
    from granet_cli import train

    real_run = train.run

    def diverging_run(spec, work, *, on_epoch, **kw):
        def forward(row, updates):
            if row["epoch"] == 4:
                raise train._Diverged("loss became nan at epoch 4")
            on_epoch(row, updates)

        return real_run(spec, work, on_epoch=forward, **kw)

    monkeypatch.setattr(train, "run", diverging_run)
    reports = run_trial(monkeypatch, tmp_path, step=0.001, report_every=1e9, checkpoint_every=1e9)
    assert carried(reports) == [1, 2, 3]
    assert len(reports) == 1 and json.loads(reports[0][2][FINAL_KEY])["status"] == "diverged"


def test_the_rungs_trials_report_at_are_where_ray_places_asha_rungs():
    """`asha_rungs` (what a tuning trial reports at) against the rungs of the scheduler granet tune
    builds, read from Ray's own bracket (a private attribute: this test is what notices it moving)."""
    from types import SimpleNamespace as NS

    from granet_cli.sweep.tune_run import _scheduler, asha_rungs

    for epochs in (1, 2, 3, 5, 8, 9, 17, 30, 64, 65, 200):
        res = NS(cell=NS(spec=NS(optim=NS(epochs=epochs))))
        scheduler = _scheduler(NS(scheduler="asha"), res)
        assert asha_rungs(epochs) == sorted(m for m, _ in scheduler._brackets[0]._rungs), epochs
