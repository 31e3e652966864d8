"""`granet report` in a pipe and without a validation split (issue 21): the terminal table keeps a
text mark for the significantly best cell (``*``) and for the cells not significantly different from
the best (``≈``) where no style is printed, and ``--metric selected_test_acc`` on runs without a
validation split is one line saying to set ``data.val_fraction`` (exit 2), not a table of dashes.
The marks expected are computed by hand (tests/report/test_report.py's expected_marks)."""

from __future__ import annotations

import statistics

from .test_report import ACC, DASH, DENSITIES, ci_half, expected_marks, make_db


def _cell_text(vals: list[float]) -> str:
    half = ci_half(vals)
    return f"{statistics.mean(vals) * 100:.2f}" + (f" ± {half * 100:.2f}" if half is not None else "")


def test_marks_survive_piping(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    make_db(db)
    r = cli("report", "--db", db, "--out", tmp_path / "out", "--format", "md")
    assert r.exit_code == 0, r.output
    assert "\x1b[" not in r.output  # piped: no styles at all, so the marks must be text
    lines = {ln.split()[0]: ln for ln in r.output.splitlines() if ln.strip() and ln.split()[0] in ACC_METHODS}
    marks = expected_marks()
    for d in DENSITIES:
        best, tied = marks[d]
        for m in ACC_METHODS:
            if (m, d) not in ACC or len(ACC[(m, d)]) < 2:
                continue
            text = _cell_text(ACC[(m, d)])
            assert text in lines[m], (m, d, lines[m])
            after = lines[m].split(text, 1)[1]
            assert after.startswith(" *") == (m == best), (m, d, lines[m])
            assert after.startswith(" ≈") == (m in tied), (m, d, lines[m])
    assert any(best for best, _t in marks.values()) and any(t for _b, t in marks.values())  # both kinds shown
    assert "* marks the bold cells" in " ".join(r.output.split())


ACC_METHODS = ("granet", "rigl", "set")


def test_selected_metric_without_validation_split(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    make_db(db)  # no run has a validation split, so none has selected_test_acc
    for extra in ((), ("--json",)):
        r = cli("report", "--db", db, "--out", tmp_path / "out", "--metric", "selected_test_acc", *extra)
        assert r.exit_code == 2, r.output
        out = " ".join(r.output.split())
        assert "data.val_fraction" in out and "validation split" in out
        assert DASH not in r.output and "method \\ density" not in r.output
    assert not (tmp_path / "out").exists()  # nothing written
