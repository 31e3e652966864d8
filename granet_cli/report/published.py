"""Published accuracies (granet_cli/data/published.csv) beside the measured cells whose recipe matches.

Its own module because it reads a data file shipped with granet, not the results database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tables import INTERVALS, METRIC_SHORT, Table, TableRow, TextTable, density_key, fmt_density

PUBLISHED_CSV = Path(__file__).parent.parent / "data" / "published.csv"
PUBLISHED_FIELDS = (
    "paper",
    "table",
    "dataset",
    "model",
    "method",
    "density",
    "epochs",
    "number",
    "std",
    "source",
    "recipe",
)
#: the recipe settings a published number is matched on (besides epochs): csv key -> spec field, words
RECIPE_FIELDS = {
    "batch_size": ("data.batch_size", "batch size"),
    "update_frequency": ("sparsity.update_frequency", "update interval"),
    "drop_fraction": ("sparsity.drop_fraction", "drop fraction"),
    "update_end_epoch": ("sparsity.update_end_epoch", "end of updates"),
}
#: recipe settings that only apply to methods with drop-and-grow
DROP_AND_GROW_ONLY = ("update_frequency", "drop_fraction", "update_end_epoch")


def load_published(path: Path = PUBLISHED_CSV) -> list[dict[str, Any]]:
    """The published accuracies shipped with granet (``#`` lines are comments).
    ``density``/``number``/``std`` as floats (std may be None), ``epochs`` as int."""
    import csv

    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    except OSError:
        return []
    out = []
    for row in csv.DictReader(lines):
        out.append(
            {
                **{k: (row.get(k) or "").strip() for k in PUBLISHED_FIELDS},
                "density": float(row["density"]),
                "epochs": int(row["epochs"]),
                "number": float(row["number"]),
                "std": float(row["std"]) if (row.get("std") or "").strip() else None,
                "recipe": _recipe(row.get("recipe") or ""),
            }
        )
    return out


def _recipe(text: str) -> dict[str, float]:
    """``key=value;...`` -> the known recipe settings (numbers)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, value = part.partition("=")
        if key.strip() in RECIPE_FIELDS:
            out[key.strip()] = float(value)
    return out


def recipe_gaps(published: dict[str, Any], fields: dict[str, Any], method: str) -> tuple[list[str], list[str]]:
    """How a measured row's recipe differs from a published number's: (settings that differ, as
    "update interval 4000 vs 100"; settings the source does not state). Both empty: the same recipe."""
    differ, unknown = [], []
    for key, (spec_field, words) in RECIPE_FIELDS.items():
        if method == "dense" and key in DROP_AND_GROW_ONLY:
            continue
        ours = fields.get(spec_field)
        theirs = published["recipe"].get(key)
        if theirs is None:
            unknown.append(words)
        elif ours is None or float(ours) != theirs:
            differ.append(f"{words} {ours if ours is not None else 'unset'} vs {theirs:g}")
    return differ, unknown


def _row_epochs(row: TableRow) -> int | None:
    e = row.group.fields.get("optim.epochs") if row.group else None
    return int(e) if isinstance(e, (int, float)) and not isinstance(e, bool) else None


def published_table(main: Table, published: list[dict[str, Any]], metric: str) -> TextTable | None:
    """Published numbers next to the measured cell with the gap, for each cell whose recipe matches
    (dataset, model, method, density, epochs)."""
    rows, data = [], []
    for r in main.rows:
        epochs = _row_epochs(r)
        dens = [1.0] if r.baseline else main.densities
        cells = [r.cells[0]] if r.baseline else r.cells
        for d, c in zip(dens, cells):
            if c is None:
                continue
            for p in published:
                if (p["dataset"], p["model"], p["method"]) != (main.dataset, main.model, r.method):
                    continue
                if density_key(p["density"]) != density_key(d) or p["epochs"] != epochs:
                    continue
                gap = c.mean * 100 - p["number"]
                pub = f"{p['number']:.2f}" + (f" ± {p['std']:.2f}" if p["std"] is not None else "")
                differ, unknown = recipe_gaps(p, r.group.fields if r.group else {}, r.method)
                recipe = (
                    "same"
                    if not differ and not unknown
                    else "approximate recipe: "
                    + "; ".join(differ + ([f"not stated: {', '.join(unknown)}"] if unknown else []))
                )
                rows.append(
                    [r.label, fmt_density(d), c.text, pub, f"{gap:+.2f}", recipe, f"{p['paper']}, {p['table']}"]
                )
                data.append(
                    {
                        "row": r.label,
                        "density": d,
                        "measured_mean": c.mean,
                        "measured_ci95": c.ci95,
                        "measured_n": c.n,
                        "published": p["number"],
                        "published_std": p["std"],
                        "gap_pp": gap,
                        "paper": p["paper"],
                        "table": p["table"],
                        "source": p["source"],
                        "epochs": p["epochs"],
                        "same_recipe": not differ and not unknown,
                        "recipe_differs": differ,
                        "recipe_not_stated": unknown,
                    }
                )
    if not rows:
        return None
    notes = [
        (
            f"Published top-1 test accuracies (granet_cli/data/published.csv) beside the measured "
            f"{METRIC_SHORT.get(metric, metric)} (%, {INTERVALS[main.interval]}) where the recipe matches: dataset, model, method, "
            "target density and epochs; gap = measured − published, in percentage points. recipe: 'same' only "
            "where batch size, update interval, drop fraction and end of updates are stated by the source and "
            "equal the run's; otherwise 'approximate recipe' with what differs or is not stated."
        )
    ]
    return TextTable(
        "published",
        "Published numbers beside yours",
        ["method", "density", "measured", "published", "gap", "recipe", "source"],
        rows,
        notes,
        set(),
        [False, True, True, True, True, False, False],
        data,
    )
