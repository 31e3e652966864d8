"""The report's "tuning" section for a sweep `granet tune` made: the search space, the samples, the
chosen values per method x density, and the validation accuracy of every trial in the order they
started (the chosen one marked). Read from the tuning sweep's row and runs, never from test accuracy.

Tuning trials are runs of their own sweep (`<name>:tuning`, its grid_json has a `tune` key):
`tuning_sweep_ids` lets a report of all runs leave them out.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store import Store, StoreError


def tuning_sweep_ids(st: Store) -> set[str]:
    """The sweeps of tuning trials (left out of a report of all runs: they are not results)."""
    return {s["sweep_id"] for s in st.sweeps() if isinstance(s.get("grid"), dict) and "tune" in s["grid"]}


@dataclass
class TuningSection:
    space: list[tuple[str, str]]  # (field, distribution)
    samples: int
    search: str
    scheduler: str
    metric: str
    cells: list[dict] = field(default_factory=list)  # cell, counts, chosen values, val_acc, run_id
    svg: str | None = None

    @property
    def md(self) -> str:
        lines = ["## Tuning", "", self._summary(), ""]
        lines += ["| cell | trials | chosen values | val acc | run |", "|---|---|---|---:|---|"]
        for c in self.cells:
            lines.append(f"| {c['cell']} | {c['counts']} | {c['values']} | {c['val']} | `{c['run_id']}` |")
        if self.svg is not None:
            data = base64.b64encode(self.svg.encode()).decode()
            lines += ["", f"![validation accuracy of every tuning trial](data:image/svg+xml;base64,{data})"]
        return "\n".join(lines) + "\n\n"

    @property
    def html(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(c['cell'])}</td><td>{html.escape(c['counts'])}</td>"
            f'<td>{html.escape(c["values"])}</td><td class="num">{c["val"]}</td>'
            f"<td><code>{html.escape(c['run_id'])}</code></td></tr>"
            for c in self.cells
        )
        figure = f"<figure>{self.svg[self.svg.find('<svg') :]}</figure>" if self.svg else ""
        return (
            f'<section><h2>Tuning</h2><p class="note">{html.escape(self._summary())}</p>'
            '<table><thead><tr><th>cell</th><th>trials</th><th>chosen values</th><th class="num">val acc</th>'
            f"<th>run</th></tr></thead><tbody>{rows}</tbody></table>{figure}</section>"
        )

    def _summary(self) -> str:
        space = "; ".join(f"{k}: {d}" for k, d in self.space)
        return (
            f"Searched per method x density with {self.search} search, {self.samples} samples, scheduler "
            f"{self.scheduler}, on the validation split ({self.metric}); test accuracy was never used. "
            f"Space: {space}. The chosen values were then run over the seeds of the tables above."
        )


def _describe(dist: dict) -> str:
    args = dist.get("args") or []
    if dist.get("kind") == "choice":
        return "choice of " + ", ".join(str(a) for a in args)
    return f"{dist.get('kind')} [{args[0]:g}, {args[1]:g}]" if len(args) == 2 else str(dist)


def _fmt(values: dict | None) -> str:
    if not values:
        return "-"
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def tuning_section(db_path: str | Path, sweep_name: str | None) -> TuningSection | None:
    """The tuning section of the report of sweep `sweep_name`, or None when no tune made it."""
    if not sweep_name:
        return None
    try:
        st = Store(db_path, read_only=True)
    except StoreError:
        return None
    try:
        found = [s for s in st.sweeps() if ((s.get("grid") or {}).get("tune") or {}).get("of_sweep") == sweep_name]
        if not found:
            return None
        tune = found[0]["grid"]["tune"]
        runs = st.runs(sweep=found[0]["sweep_id"])
        last: dict[str, tuple[int, Any]] = {}
        for e in st.epochs([r["run_id"] for r in runs]) if runs else []:
            if e["run_id"] not in last or e["epoch"] >= last[e["run_id"]][0]:
                last[e["run_id"]] = (e["epoch"], e.get("val_acc"))
    finally:
        st.close()
    section = TuningSection(
        [(k, _describe(d)) for k, d in (tune.get("space") or {}).items()],
        int(tune.get("samples") or 0),
        str(tune.get("search")),
        str(tune.get("scheduler")),
        str(tune.get("metric")),
    )
    series: dict[str, list[tuple[int, float, bool]]] = {}
    for cell, chosen in (tune.get("chosen") or {}).items():
        mine = [r for r in runs if _cell_of(r) == cell]
        counts: dict[str, int] = {}
        for i, r in enumerate(mine):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
            val = last.get(r["run_id"], (0, None))[1]
            if val is not None and r["status"] in ("completed", "stopped"):
                series.setdefault(cell, []).append((i + 1, val, r["run_id"] == chosen.get("run_id")))
        val = chosen.get("val_acc")
        section.cells.append(
            {
                "cell": cell,
                "counts": ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
                "values": _fmt(chosen.get("values")),
                "val": f"{100 * val:.2f} %" if isinstance(val, float) else "-",
                "run_id": str(chosen.get("run_id") or "-"),
            }
        )
    section.svg = _plot(series) if series else None
    return section


def _cell_of(run: dict) -> str:
    density = run.get("target_density")
    return f"{run['method']} d={density:g}" if isinstance(density, float) else str(run["method"])


def _plot(series: dict[str, list[tuple[int, float, bool]]]) -> str:
    """Final validation accuracy of each finished trial in start order, per cell; the chosen ringed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for cell, points in series.items():
        xs, ys = [p[0] for p in points], [100 * p[1] for p in points]
        (line,) = ax.plot(xs, ys, marker="o", linestyle=":", label=cell)
        for x, y, chosen in points:
            if chosen:
                ax.plot([x], [y], marker="o", markersize=13, fillstyle="none", color=line.get_color())
    ax.set_xlabel("trial (in the order it started)")
    ax.set_ylabel("final validation accuracy (%)")
    ax.set_title("Tuning trials (ringed: chosen)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()
