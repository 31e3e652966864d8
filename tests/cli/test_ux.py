"""The CLI as a researcher meets it: --version, -h, choices in --help, GRANET_DB, -q, one-line usage
errors, the progress bar agreeing with the summary, `granet data fetch` / `data.download` (against a
local archive, never the network) and `--tensorboard`."""

from __future__ import annotations

import hashlib
import http.server
import importlib.metadata
import pickle
import tarfile

import numpy as np
import pytest
from torchvision import datasets as tvd
from typer.testing import CliRunner

from granet_cli.cli import app
from granet_cli.spec import load_run_spec

from ..conftest import QUICKSTART, rows


def wide(*args, **env):
    """Invoke with a wide terminal, so Rich does not wrap help text."""
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **env})


def _one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ----------------------------------------------------------------------------- basics
def test_version_is_the_installed_distribution(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"granet {importlib.metadata.version('granet-cli')}"


def test_h_is_help_everywhere_and_completion_is_offered():
    top = wide("-h")
    assert top.exit_code == 0 and "--install-completion" in top.stdout and "--version" in top.stdout
    for cmd in ("run", "sweep", "report", "export", "eval", "bench-sparse", "results", "sql"):
        result = wide(cmd, "-h")
        assert result.exit_code == 0 and f" {cmd} [OPTIONS]" in result.stdout, cmd
    assert wide("data", "fetch", "-h").exit_code == 0


def test_help_lists_choices_and_the_env_var():
    report = wide("report", "-h").stdout
    assert "<md|html|both>" in report and "<final_test_acc|" in report and "|best_test_acc" in report
    assert "(default: the sweep's name, else granet-report)" in report  # Rich once swallowed "[default: ...]"
    assert "csv|parquet|json" in wide("results", "-h").stdout
    assert "pt|safetensors" in wide("export", "-h").stdout
    assert "cifar10|cifar100|imagenet" in wide("data", "fetch", "-h").stdout
    assert "granet_uniform" in wide("sweep", "-h").stdout  # the methods --methods accepts
    for cmd in ("run", "report", "results", "sql", "export"):
        assert "env var: GRANET_DB" in wide(cmd, "-h").stdout, cmd


def test_quiet_on_every_long_command():
    for cmd in (("run",), ("sweep",), ("export",), ("bench-sparse",), ("results",), ("data", "fetch")):
        text = wide(*cmd, "-h").stdout
        assert "--quiet" in text and "-q" in text, cmd


def test_granet_db_env_var_is_the_default_db(tmp_path, monkeypatch):
    target = tmp_path / "from-env.duckdb"
    monkeypatch.setenv("GRANET_DB", str(target))
    line = _one_error_line(CliRunner().invoke(app, ["sql", "select 1"]))
    assert str(target) in line and not target.exists()


def test_usage_errors_are_one_line(cli):
    assert "'pdf' is not one of 'md', 'html', 'both'" in _one_error_line(cli("report", "--format", "pdf"))
    assert "No such command" in _one_error_line(cli("frobnicate"))
    assert "No such option" in _one_error_line(cli("--frobnicate"))
    assert "Missing argument" in _one_error_line(cli("eval"))


def test_debug_shows_the_traceback_an_error_line_hides(tmp_path):
    plain = CliRunner().invoke(app, ["eval", str(tmp_path / "x.pt")])
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr
    junk = tmp_path / "j.pt"
    junk.write_bytes(b"junk")
    (tmp_path / "j.json").write_text('{"format": "granet-export", "spec": {}, "weights": "j.pt"}')
    debug = CliRunner().invoke(app, ["--debug", "eval", str(junk)])
    assert debug.exit_code == 2 and "Traceback" in debug.stderr and "error: " in debug.stderr


def test_progress_bar_last_line_matches_the_summary():
    from granet_cli.train import _Progress

    spec = load_run_spec(QUICKSTART)
    bar = _Progress(spec, steps_per_epoch=2)
    try:
        for epoch in range(1, 31):
            bar.advance(0.5, 0.1)
            bar.advance(0.4, 0.1)
            bar.epoch_done({"epoch": epoch, "test_acc": 0.9 if epoch < 30 else 29 / 30})
        info = bar.progress.tasks[0].fields["info"]
    finally:
        bar.close()
    assert info.endswith(f"test acc {100 * 29 / 30:.2f} % (epoch 30/30)")  # 96.67 %, as the summary prints it


# ----------------------------------------------------------------------------- data fetch
def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the test's archive without writing request logs to stderr (the CLI's stderr is checked)."""

    def log_message(self, format, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    """A client that stops reading mid-download (torchvision aborting on a bad checksum) is expected
    here; the default handler would print its BrokenPipeError into the CLI's captured stderr."""

    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def local_cifar10(tmp_path, monkeypatch):
    """A small CIFAR-10 archive in the real format, served over HTTP from this machine (127.0.0.1, no
    proxy) with its URL and md5s patched into torchvision's class: torchvision's own download code runs."""
    import functools
    import threading

    src = tmp_path / "src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        with (src / name).open("wb") as f:
            pickle.dump(
                {
                    "batch_label": name,
                    "data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
                    "labels": rng.integers(0, 10, 8).tolist(),
                },
                f,
            )
    with (src / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    archive = tmp_path / "src" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    handler = functools.partial(_QuietHandler, directory=str(archive.parent))
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setattr(tvd.CIFAR10, "url", f"http://127.0.0.1:{server.server_port}/{archive.name}")
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", _md5(archive))
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[n, _md5(src / n)] for n in names[:5]])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", _md5(src / "test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": _md5(src / "batches.meta")})
    yield archive, src
    server.shutdown()
    server.server_close()


def test_fetch_downloads_and_checks_a_local_archive(local_cifar10, cli, tmp_path):
    archive, src = local_cifar10
    root = tmp_path / "data"
    result = cli("data", "fetch", "cifar10", "--root", root, "-q")
    assert result.exit_code == 0, result.output
    got = root / "cifar-10-batches-py"
    for f in src.iterdir():
        assert (got / f.name).read_bytes() == f.read_bytes()
    assert _md5(root / "cifar-10-python.tar.gz") == _md5(archive)
    stamp = (root / "cifar-10-python.tar.gz").stat().st_mtime_ns
    assert cli("data", "fetch", "cifar10", "--root", root, "-q").exit_code == 0  # verified, not fetched again
    assert (root / "cifar-10-python.tar.gz").stat().st_mtime_ns == stamp


def test_fetch_refuses_a_bad_checksum_a_dead_url_and_imagenet(local_cifar10, cli, tmp_path, monkeypatch):
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", "0" * 32)
    assert "checksum mismatch" in _one_error_line(cli("data", "fetch", "cifar10", "--root", tmp_path / "a", "-q"))
    assert not (tmp_path / "a" / "cifar-10-batches-py").exists()
    monkeypatch.setattr(tvd.CIFAR10, "url", tvd.CIFAR10.url.rsplit("/", 1)[0] + "/gone.tar.gz")  # a 404
    assert "download from" in _one_error_line(cli("data", "fetch", "cifar10", "--root", tmp_path / "b", "-q"))
    assert "cannot be downloaded" in _one_error_line(cli("data", "fetch", "imagenet", "--root", tmp_path / "c"))


def test_run_with_data_download_fetches_then_trains(local_cifar10, cli, tmp_path):
    root, db = tmp_path / "data", tmp_path / "r.duckdb"
    args = [
        "--set",
        "data.name=cifar10",
        "--set",
        f"data.root={root}",
        "--set",
        "data.download=true",
        "--set",
        "sparsity.method=dense",
        "--set",
        "optim.epochs=1",
        "--set",
        "data.batch_size=16",
    ]
    result = cli("run", QUICKSTART, *args, "--db", db, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    ((status, dataset),) = rows(db, "select status, dataset from runs")
    assert (status, dataset) == ("completed", "cifar10")
    ((n,),) = rows(db, "select count(*) from epochs")
    assert n == 1
    # where the files come from is not part of the experiment's identity
    with_dl = load_run_spec(QUICKSTART, ["data.name=cifar10", f"data.root={root}", "data.download=true"])
    without = load_run_spec(QUICKSTART, ["data.name=cifar10", f"data.root={root}"])
    assert with_dl.spec_hash() == without.spec_hash()


def test_imagenet_download_is_refused_at_validation(cli, tmp_path):
    line = _one_error_line(
        cli(
            "validate",
            QUICKSTART,
            "--set",
            "data.name=imagenet",
            "--set",
            f"data.root={tmp_path}",
            "--set",
            "data.download=true",
        )
    )
    assert "imagenet cannot be downloaded" in line


# ----------------------------------------------------------------------------- tensorboard
def test_tensorboard_event_file_holds_every_epoch(cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    db, tb = tmp_path / "r.duckdb", tmp_path / "tb"
    result = cli(
        "run",
        QUICKSTART,
        "--set",
        "optim.epochs=3",
        "--set",
        "sparsity.final_prune_epoch=2",
        "--db",
        db,
        "--runs-dir",
        tmp_path / "runs",
        "-q",
        "--tensorboard",
        tb,
    )
    assert result.exit_code == 0, result.output
    ((run_id,),) = rows(db, "select run_id from runs")
    acc = EventAccumulator(str(tb / run_id))
    acc.Reload()
    for tag, column in (
        ("test/acc", "test_acc"),
        ("sparsity/density", "density"),
        ("sparsity/itop_rate", "itop_rate"),
        ("train/loss", "train_loss"),
    ):
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        want = rows(db, f"select epoch, {column} from epochs where run_id = ? order by epoch", run_id)
        assert [s for s, _ in got] == [e for e, _ in want] == [1, 2, 3], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), tag  # stored as float32
    updates = rows(db, "select step, dropped from mask_updates where run_id = ? order by step", run_id)
    assert [(e.step, e.value) for e in acc.Scalars("mask_updates/dropped")] == [(s, float(d)) for s, d in updates]


def test_tensorboard_missing_is_one_line_and_writes_nothing(cli, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    db = tmp_path / "r.duckdb"
    line = _one_error_line(
        cli("run", QUICKSTART, "--db", db, "--runs-dir", tmp_path / "runs", "--tensorboard", tmp_path / "tb")
    )
    assert "tensorboard package" in line
    assert not db.exists() and not (tmp_path / "runs").exists() and not (tmp_path / "tb").exists()
