"""`granet report --interval boot`: intervals over seeds and test examples, comparisons paired on the
shared test set, from the per-example records runs keep (runs.test_correct). Expectations are closed
forms computed here (the binomial interval, counts of examples), not the report's own code."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from granet_cli.report import report_json
from granet_cli.store import Store
from granet_cli.store.examples import pack

from ..store.test_store import run_dict

N = 1000  # test examples
T0 = datetime(2026, 1, 1)


def _bits(correct: int, shift: int = 0) -> np.ndarray:
    """`correct` of N examples right: a contiguous run starting at `shift` (wrapping)."""
    bits = np.zeros(N, dtype=bool)
    bits[(np.arange(correct) + shift) % N] = True
    return bits


def _db(path, cells: dict[tuple[str, float], list[np.ndarray | None]]) -> None:
    with Store(path) as st:
        i = 0
        for (method, d), per_seed in cells.items():
            for seed, bits in enumerate(per_seed):
                i += 1
                rid = f"{method}-{d}-{seed}"
                st.start_run(
                    run_dict(
                        rid,
                        sweep_id=None,
                        spec_hash=rid,
                        method=method,
                        target_density=d,
                        seed=seed,
                        spec_json="{}",
                        started_at=T0 + timedelta(minutes=i),
                    )
                )
                acc = float(bits.mean()) if bits is not None else 0.9
                st.finish_run(
                    rid,
                    dict(final_test_acc=acc, achieved_density=d, test_correct=pack(bits) if bits is not None else None),
                    [],
                )


def _cells(data: dict) -> dict[str, dict]:
    main = data["groups"][0]["main"]
    return {r["label"]: r["cells"][0] for r in main["rows"]}


def test_identical_seeds_give_the_binomial_interval_and_pairing_finds_a_shared_difference(tmp_path):
    """Seeds that agree: the bootstrap interval is the test set's binomial one. b misses 15 examples
    that a gets right (1.5 points); unpaired, two binomial samples at ~90 % cannot tell them apart
    (z ~ 1.1), paired on the same examples the difference is certain: a is marked best."""
    db = tmp_path / "r.duckdb"
    a, b = _bits(900), _bits(885)
    _db(db, {("granet", 0.1): [a, a, a], ("rigl", 0.1): [b, b, b], ("dense", 1.0): [_bits(950)] * 3})
    data = report_json(db, interval="boot")
    cells = _cells(data)
    g = cells["granet"]
    lo, hi = g["boot95_interval"]
    half = 1.96 * math.sqrt(0.9 * 0.1 / N)
    assert g["mean"] == pytest.approx(0.9) and lo < 0.9 < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.12)
    assert g["text"] == f"90.00 [{lo * 100:.2f}, {hi * 100:.2f}]"
    assert (0.015 / math.sqrt(2 * 0.9 * 0.1 / N)) < 1.2  # what an unpaired test would see
    assert g["best"] and not cells["rigl"]["tied"]
    comps = {c["other"]: c for c in data["groups"][0]["comparisons"]}
    assert comps["rigl"]["test"] == "paired-bootstrap" and comps["rigl"]["t"] is None
    assert comps["rigl"]["p"] < 0.01 and comps["rigl"]["diff"] == pytest.approx(0.015)
    notes = " ".join(data["groups"][0]["main"]["notes"])
    assert "two-level bootstrap over seeds and test examples" in notes and "paired on the shared test" in notes


def test_runs_without_records_fall_back_to_the_t_interval_and_say_so(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    _db(db, {("granet", 0.1): [_bits(900, s) for s in range(3)], ("rigl", 0.1): [None, None, None]})
    cells = _cells(report_json(db, interval="boot"))
    assert cells["granet"]["boot95_interval"] is not None
    assert cells["rigl"]["boot95_interval"] is None and cells["rigl"]["text"].endswith(" †")
    # the optimistic best-over-epochs accuracy has no per-example record: one line, exit 2
    res = cli("report", "--db", db, "--interval", "boot", "--metric", "best_test_acc", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "per-example records" in res.output and not (tmp_path / "o").exists()
