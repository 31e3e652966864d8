"""The driver's side of a sweep's trials: the ray.tune.Callback that records every trial to the
results db through its `RunRecorder` (the only writer of the db), says retries and lost nodes in
words, and keeps the live view up to date.

Kept apart from the Tune run (`backend`) because it is the one piece that sees every report of
every trial; it imports no Ray until `make_callback` builds the callback class.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..recorder import EpochBuffer, RunRecorder
from .cluster import failure_reason
from .plan import SweepOutcome, SweepPlan, TrialOutcome
from .trainable import EPOCHS_KEY, FINAL_KEY, NODE_KEY, REPLAY_KEY
from .view import Display

#: a retry that has not started after this many seconds is said to wait for resources
WAIT_NOTE_S = 5.0
#: every trial's epochs that arrived within this many seconds are written in one transaction, while
#: the driver is idle (a write per report held the reporting trial up: 1.2x its time alone)
FLUSH_EVERY_S = 1.0


class _StoreCallbackHooks:
    """The hooks of the driver-side ray.tune.Callback that writes every trial to the results db
    through its `RunRecorder` (and, with `tensorboard`, each trial's epochs to
    `<tensorboard>/<run id>/`). A plain class, so that this module imports no Ray: `make_callback`
    puts it in front of `tune.Callback` when a sweep starts.

    Its state lives on the instance (never in closures), and is left out when Tune pickles its
    RunConfig: the db handle and the display stay in this process."""

    def __init__(self, store, plan, by_run, display, max_failures, outcome, tensorboard, new_trial=None) -> None:
        self.store, self.plan, self.by_run, self.display = store, plan, by_run, display
        self.max_failures, self.outcome = max_failures, outcome
        self.tensorboard = tensorboard
        # `granet tune`: trials a search algorithm creates as it goes (trial -> TrialOutcome);
        # a trial its scheduler ends early is recorded `stopped`, not failed
        self.new_trial = new_trial
        self.by_trial: dict[str, TrialOutcome] = {}
        self.recorders: dict[str | None, RunRecorder] = {}  # run_id -> the run's recorder
        self.buffer: EpochBuffer | None = EpochBuffer(store, FLUSH_EVERY_S)  # every trial's epochs, together

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.store = self.plan = self.display = self.outcome = self.tensorboard = None
        self.by_run, self.max_failures, self.recorders = {}, 0, {}
        self.new_trial, self.by_trial = None, {}
        self.buffer = None

    def _recorder(self, t: TrialOutcome) -> RunRecorder:
        """The trial's run, recorded as `granet run` records one (the sweep's store stays open)."""
        rec = self.recorders.get(t.run_id)
        if rec is None:
            assert t.run_id is not None  # every trial to run is given its run id when it is planned
            trackers = []
            if self.tensorboard is not None:
                from ..trackers import TensorBoardLogger

                hparams = {"label": t.point.label, "spec_hash": t.point.spec_hash}
                trackers.append(TensorBoardLogger(self.tensorboard, t.run_id, hparams))
            rec = RunRecorder(
                t.point.spec,
                t.run_id,
                sweep_id=self.plan.sweep_id,
                store=self.store,
                trackers=trackers,
                buffer=self.buffer,
            )
            self.recorders[t.run_id] = rec
        return rec

    def _start_attempt(self, t: TrialOutcome) -> None:
        """(Re)register the run as running with its attempt count (runs.attempts): the first attempt
        of this invocation and every Tune retry; a run continued from an earlier invocation adds up."""
        self._recorder(t).start(attempts=t.prior_attempts + t.attempts)

    def _outcome(self, trial) -> TrialOutcome | None:
        if self.new_trial is None:
            return self.by_run.get(trial.config.get("point", {}).get("run_id"))
        if trial.trial_id not in self.by_trial:
            self.by_trial[trial.trial_id] = self.new_trial(trial)
        return self.by_trial[trial.trial_id]

    def _start(self, t: TrialOutcome) -> None:
        t.status, t.ran, t.attempts = "running", True, 1
        self._start_attempt(t)
        self.display.started()
        if t.resume_from:
            self.display.note(
                f"[cyan]>>[/cyan] {t.point.label}: resuming from epoch {t.resume_epoch} (its checkpoint in storage)"
            )

    def _fail(self, t: TrialOutcome, error: str) -> None:
        t.status, t.error = "failed", error
        why = self._recorder(t).stop("failed", error)
        if why:
            self.display.note(f"[red]x[/red] {t.point.label}: {why.lstrip('; ')}")
        self.display.finished(t)

    def on_trial_start(self, iteration, trials, trial, **info):
        t = self._outcome(trial)
        if t is not None and t.status == "pending":
            self._start(t)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        t = self._outcome(trial)
        if t is None or t.status != "running":
            return
        t.node_ip = result.get("node_ip") or t.node_ip
        t.node_id = result.get(NODE_KEY) or t.node_id
        t.waiting_since = None
        if REPLAY_KEY in result:  # a continued trial: its checkpoint's rows replace the run's rows
            replay = json.loads(result[REPLAY_KEY])
            self._recorder(t).replay(replay["epochs"], replay["updates"])
            t.last_epoch = replay["epochs"][-1]["epoch"] if replay["epochs"] else 0
            if t.fresh_attempt:
                self.display.note(
                    f"[cyan]>>[/cyan] {t.point.label}: attempt {t.attempts} continues from its "
                    f"epoch-{t.last_epoch} checkpoint"
                )
            t.fresh_attempt = False
        if EPOCHS_KEY in result:
            batch = [(row, updates) for row, updates in json.loads(result[EPOCHS_KEY])]
            if t.fresh_attempt:  # a retry with no checkpoint to go on from starts over: so do its rows
                self._recorder(t).restart()
                t.fresh_attempt = False
            self._recorder(t).epochs(batch)  # to the buffer (written in on_step_end), and the trackers
            t.last_epoch = batch[-1][0]["epoch"]
            self.display.epoch(t, batch[-1][0].get("test_acc"))
        if FINAL_KEY in result:
            done = json.loads(result[FINAL_KEY])
            if done["status"] == "failed":  # granet's own error: recorded after this one attempt
                where = f" on node {t.node_ip}" if t.node_ip else ""
                self._fail(t, f"{done['error']} (during epoch {t.last_epoch + 1}{where}; not retried)")
                return
            t.final, t.error = done["final"], done.get("error")
            t.status = done["status"] if done["status"] in ("completed", "diverged") else "failed"
            self._recorder(t).finish(t.status, t.final, done["layers"], t.error)
            self.display.finished(t)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Tune retries the trial (FailureConfig): say why in words, count the attempt."""
        t = self._outcome(trial)
        if t is None:
            return
        if t.status == "pending":
            self._start(t)
        reason = failure_reason(trial, t)
        t.attempts += 1
        t.fresh_attempt, t.last_epoch, t.waiting_since = True, 0, time.monotonic()
        if self.outcome is not None:
            self.outcome.retries += 1
        self._start_attempt(t)
        n = getattr(trial, "num_failures", t.attempts - 1)
        count = f"{n}/{self.max_failures}" if n else "(a preemption does not count against --max-failures)"
        self.display.note(f"[yellow]![/yellow] {t.point.label}: {reason}; retrying {count}")

    def flush(self) -> None:
        """Write the epochs still waiting (the sweep ended or was interrupted)."""
        if self.buffer is not None:
            self.buffer.flush()

    def on_step_end(self, iteration, trials, **info):
        """The epochs that have waited FLUSH_EVERY_S are written (after Tune has sent the trials on).
        A retry that has not started after WAIT_NOTE_S waits for a node with room for it: say so, once."""
        self.flush_if_due()
        for trial in trials:
            t = self._outcome(trial)
            if t is None or t.waiting_since is None or time.monotonic() - t.waiting_since < WAIT_NOTE_S:
                continue
            t.waiting_since = None
            if trial.status == "PENDING":
                need = getattr(trial.placement_group_factory, "required_resources", {}) or {}
                room = f"{need.get('CPU', 0):g} CPU + {need.get('GPU', 0):g} GPU"
                self.display.note(
                    f"[yellow]..[/yellow] {t.point.label}: attempt {t.attempts} waits for a node with {room} free"
                )

    def flush_if_due(self) -> None:
        if self.buffer is not None:
            self.buffer.flush_if_due()

    def on_trial_complete(self, iteration, trials, trial, **info):
        t = self._outcome(trial)
        if t is None or t.status != "running":
            return
        if self.new_trial is not None:  # granet tune: the scheduler stopped it (a result, not a failure)
            t.status, t.error = "stopped", f"stopped early by the scheduler after epoch {t.last_epoch}"
            self._recorder(t).stop("stopped", t.error)
            self.display.finished(t)
            return
        self._fail(t, "trial ended without a final result")  # returned without its final report

    def on_trial_error(self, iteration, trials, trial, **info):
        t = self._outcome(trial)
        if t is None or t.status not in ("pending", "running"):
            return
        if t.status == "pending":  # failed before it started: recorded all the same
            self._start(t)
        reason = failure_reason(trial, t)
        if t.attempts > 1:
            reason += f"; gave up after {t.attempts} attempts (--max-failures {self.max_failures})"
        self._fail(t, reason)


def make_callback(
    store,
    plan: SweepPlan,
    by_run: dict[str | None, TrialOutcome],
    display: Display,
    max_failures: int = 0,
    outcome: SweepOutcome | None = None,
    tensorboard: Path | None = None,
    new_trial=None,
):
    """The StoreCallback of a sweep: `_StoreCallbackHooks` as a ray.tune.Callback. `new_trial`
    (granet tune): trial -> its TrialOutcome, for trials a search algorithm creates as it goes."""
    from ray import tune

    callback_cls = type("StoreCallback", (_StoreCallbackHooks, tune.Callback), {})
    return callback_cls(store, plan, by_run, display, max_failures, outcome, tensorboard, new_trial)
