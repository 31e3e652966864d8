"""A full disk under the results db: one clear error, nothing half-written, readable afterwards.

The tests make their own small filesystem (a size-limited tmpfs, else a loop-mounted ext4
image; both need root) and fill it; they are skipped, with the reason, where neither mounts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from granet_cli.store import Store, StoreError

from ..conftest import rows

SIZE_MB = 8  # an empty v2 db takes ~1.8 MB (DuckDB's 256 KiB blocks), leave room for a run


def _mount(args: list[str]) -> str | None:
    """None when the mount worked, else why not."""
    if shutil.which(args[0]) is None:
        return f"{args[0]} not found"
    res = subprocess.run(args, capture_output=True, text=True)
    return None if res.returncode == 0 else (res.stderr.strip() or f"exit {res.returncode}")


def _tmpfs(mnt: Path, tmp_path: Path) -> str | None:
    return _mount(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mnt)])


def _ext4(mnt: Path, tmp_path: Path) -> str | None:
    img = tmp_path / "small.img"
    with open(img, "wb") as f:
        f.truncate(SIZE_MB * 1024 * 1024)
    return _mount(["mkfs.ext4", "-q", "-F", str(img)]) or _mount(["mount", "-o", "loop", str(img), str(mnt)])


@pytest.fixture(params=["tmpfs", "ext4"])
def small_fs(request, tmp_path: Path):
    """Each test runs on a small tmpfs and on a small loop-mounted ext4 image: with one kind
    unavailable it runs on the other; with neither it is skipped, saying why."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    kinds = {"tmpfs": _tmpfs, "ext4": _ext4}
    why = kinds[request.param](mnt, tmp_path)
    if why is not None:
        other = "ext4" if request.param == "tmpfs" else "tmpfs"
        why_other = kinds[other](mnt, tmp_path)  # probe: does the other kind work here?
        if why_other is None:
            subprocess.run(["umount", str(mnt)], capture_output=True)
            pytest.skip(f"no {request.param} here ({why}); the {other} variant covers this test")
        pytest.skip(f"cannot make a small filesystem: {request.param}: {why}; {other}: {why_other}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == 28, e  # ENOSPC
    try:  # the last partial page too
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_write_on_full_disk(small_fs: Path):
    db = small_fs / "r.duckdb"
    st = Store(db)
    st.start_run(dict(run_id="r1", spec_hash="h", method="rigl", seed=0))
    st.add_epoch("r1", dict(epoch=0, test_acc=0.5))
    filler = fill(small_fs)
    with pytest.raises(StoreError) as ei:
        st.add_epoch("r1", dict(epoch=1, test_acc=0.6))
    assert str(ei.value) == f"results db {db}: no space left on device"
    with pytest.raises(StoreError, match="no space left on device"):
        st.fail_run("r1", "failed", "no space left on device")
    # reading needs no space: the failed write left nothing behind
    (run,) = st.runs()
    assert run["status"] == "running"
    assert [e["epoch"] for e in st.epochs(["r1"])] == [0]
    filler.unlink()
    # space freed: the same store marks the run, and the file reads back as plain DuckDB
    st.fail_run("r1", "failed", "no space left on device")
    st.add_epoch("r1", dict(epoch=1, test_acc=0.6))
    st.close()
    assert rows(db, "SELECT status, error FROM runs") == [("failed", "no space left on device")]
    assert rows(db, "SELECT epoch, test_acc FROM epochs ORDER BY epoch") == [(0, 0.5), (1, 0.6)]


def test_orphan_of_a_full_disk_is_reaped_once_space_is_freed(small_fs: Path):
    """A run whose process died on a full disk (no chance to mark itself) is found by reap_orphans."""
    db = small_fs / "r.duckdb"
    Store(db).close()
    code = (
        "import sys; from granet_cli.store import Store; "
        "Store(sys.argv[1]).start_run(dict(run_id='dead', spec_hash='h', method='rigl', seed=0))"
    )
    child = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    (pid,) = rows(db, "SELECT pid FROM runs WHERE run_id = 'dead'")[0]
    filler = fill(small_fs)
    with Store(db) as st:
        with pytest.raises(StoreError, match="no space left on device"):
            st.reap_orphans()
        assert st.run("dead")["status"] == "running"
        filler.unlink()
        assert st.reap_orphans() == 1
    assert rows(db, "SELECT status, error FROM runs") == [("interrupted", f"interrupted (process {pid} gone)")]


def test_new_db_on_full_disk(small_fs: Path):
    """Creating the db on a full disk fails cleanly; what it leaves (an empty file) is taken over
    by the next open once there is space."""
    filler = fill(small_fs)
    db = small_fs / "new.duckdb"
    with pytest.raises(StoreError) as ei:
        Store(db)
    assert str(ei.value) == f"results db {db}: no space left on device"
    assert not db.exists() or db.stat().st_size == 0
    filler.unlink()
    with Store(db) as st:
        st.start_run(dict(run_id="r1"))
    assert rows(db, "SELECT run_id, status FROM runs") == [("r1", "running")]
