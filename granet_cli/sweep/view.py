"""What `granet sweep` shows: live progress, the dry-run table, the summary table and lines (rich; no Ray)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .plan import DONE_STATUSES, SweepOutcome, SweepPlan, TrialOutcome, fmt_value, point_state, short_keys

if TYPE_CHECKING:
    from rich.console import JustifyMethod


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


class Display:
    """Live terminal progress (rich): counts, the best *final* test accuracy of the trials finished so
    far (what the report's tables show by default; not the optimistic best over epochs), one line per
    finished, resumed or retried trial."""

    def __init__(self, console, plan: SweepPlan, todo: int, best: float | None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.todo = todo
        self.running = self.done = self.failed = 0
        self.best = best
        self.best_label = "earlier run" if best is not None else ""
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(plan.name, total=todo, info=self._info())

    def _info(self) -> str:
        pending = self.todo - self.running - self.done - self.failed
        best = f"{100 * self.best:.2f} % ({self.best_label})" if self.best is not None else "-"
        return (
            f"done {self.done} | running {self.running} | pending {pending} | failed {self.failed} | "
            f"best final test acc {best}"
        )

    def __enter__(self) -> Display:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.update(self.task, info=self._info())
        self.progress.stop()

    def refresh(self) -> None:
        self.progress.update(self.task, completed=self.done + self.failed, info=self._info())

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, soft_wrap=True)

    def started(self) -> None:
        self.running += 1
        self.refresh()

    def epoch(self, t: TrialOutcome, acc: float | None) -> None:
        self.refresh()  # a trial's accuracy counts once it is final (finished)

    def finished(self, t: TrialOutcome) -> None:
        self.running = max(0, self.running - 1)
        if t.status in ("failed", "interrupted"):
            self.failed += 1
            self.note(f"[red]x[/red] {t.point.label}: {t.status}: {t.error}")
        else:
            self.done += 1
            acc = t.final.get("final_test_acc")
            acc_s = f"{100 * acc:.2f} %" if acc is not None else "-"
            if t.status == "completed" and acc is not None and (self.best is None or acc > self.best):
                self.best, self.best_label = acc, t.point.label
            wall = t.final.get("wall_seconds")
            wall_s = f"{wall:.1f} s" if wall is not None else "-"
            mark = "[green]ok[/green]" if t.status == "completed" else "[yellow]!![/yellow]"
            extra = f" ({t.error})" if t.error else ""
            self.note(f"{mark} {t.point.label}: {t.status}{extra}, final test acc {acc_s}, {wall_s}")
        self.refresh()


def _grid_columns(plan: SweepPlan) -> dict[str, str]:
    return short_keys(plan.grid_keys)


def dry_run_table(plan: SweepPlan, prior: dict[str, dict]):
    from rich.table import Table

    table = Table(title=f"sweep {plan.name} ({plan.sweep_id}): {len(plan.points)} points (dry run)")
    extra = _grid_columns(plan)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("method", "left"),
        ("density", "right"),
        ("seed", "right"),
        *((c, "right") for c in extra.values()),
        ("spec_hash", "left"),
        ("state", "left"),
    )
    for col, just in columns:
        table.add_column(col, justify=just)
    for p in plan.points:
        state = point_state(prior.get(p.spec_hash))
        style = "green" if state.startswith("done") else None
        values = dict(p.params)
        table.add_row(
            p.method,
            f"{p.density:g}",
            str(p.seed),
            *(fmt_value(values.get(k)) for k in extra),
            p.spec_hash,
            state,
            style=style,
        )
    return table


def summary_table(outcome: SweepOutcome):
    from rich.table import Table

    plan = outcome.plan
    table = Table(title=f"sweep {plan.name} ({plan.sweep_id})")
    extra = _grid_columns(plan)
    for col in ("method", "density", "seed", *extra.values(), "status", "test acc", "final density", "wall", "ran"):
        table.add_column(col, justify="left" if col in ("method", "status", "ran") else "right")
    styles = {"completed": "green", "failed": "red", "interrupted": "red", "diverged": "yellow"}
    for t in outcome.trials:
        status = t.status if t.status != "pending" else "not run"
        fd = t.final.get("achieved_density")
        wall = t.final.get("wall_seconds")
        values = dict(t.point.params)
        ran = "now" if t.ran else "earlier" if t.run_id and t.status in DONE_STATUSES else "-"
        if t.ran and t.resume_epoch:
            ran = f"now (from epoch {t.resume_epoch})"
        table.add_row(
            t.point.method,
            f"{t.point.density:g}",
            str(t.point.seed),
            *(fmt_value(values.get(k)) for k in extra),
            status,
            _pct(t.final.get("final_test_acc")),
            "-" if fd is None else f"{fd:.4f}",
            "-" if wall is None else f"{wall:.1f} s",
            ran,
            style=styles.get(t.status),
        )
    return table


def failures(outcome: SweepOutcome) -> list[str]:
    """One line per trial of this invocation that failed or diverged, with its error."""
    return [
        f"{t.point.label}: {t.status}: {t.error}"
        for t in outcome.ran
        if t.status in ("failed", "diverged", "interrupted") and t.error
    ]


def summary_line(outcome: SweepOutcome) -> str:
    ran = outcome.ran
    parts = [f"{outcome.already_done} already done, {len(ran)} ran"]
    if ran:
        parts.append(
            f"({outcome.count('completed')} completed, {outcome.count('failed')} failed, "
            f"{outcome.count('diverged')} diverged)"
        )
    if outcome.resumed:
        parts.append(f"- {outcome.resumed} resumed from a checkpoint")
    if outcome.retries:
        parts.append(f"- {outcome.retries} retried after a failure")
    if outcome.interrupted_marked:
        parts.append(f"- {outcome.interrupted_marked} interrupted run(s) of an earlier attempt marked interrupted")
    parts.append(f"- wall time {outcome.wall_seconds:.1f} s")
    return " ".join(parts)
