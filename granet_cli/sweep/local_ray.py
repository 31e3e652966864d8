"""Nothing left behind by the local Ray instance a sweep starts: its processes and its session folder.

`ray.shutdown()` stops what `ray.init()` started, but only if the driver lives to call it: after a
`kill -9` of the driver, Ray's gcs_server and raylet die with it (Ray binds them to their parent),
while the raylet's DashboardAgent and RuntimeEnvAgent, log_monitor.py and workers live on, and
/tmp/ray/session_* stays. So a sweep that starts its own instance also starts a watchdog (this
module run as a script, in its own session so a signal to the driver's group spares it): it waits
for the driver's pipe to close, which happens however the driver ends, then ends every process
that still has a file open in the session folder (each of Ray's processes keeps its log files
there), and removes the folder. Processes of other Ray instances are never touched: they have
their own session folders.

On a normal exit the driver itself removes the folder, first moving Ray's logs next to the
sweep's runs when a trial failed or was retried (`LocalRay.close`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class LocalRay:
    """The local instance's session folder and the watchdog that cleans it up."""

    session: Path
    watchdog: subprocess.Popen | None

    @classmethod
    def watch(cls) -> LocalRay | None:
        """After `ray.init()` started a local instance: its watchdog (None if Ray's session is unknown)."""
        try:
            from ray._private import worker

            node: Any = getattr(worker, "_global_node", None)
            session = Path(node.get_session_dir_path())
        except Exception:  # noqa: BLE001 - Ray internals moved: nothing to watch
            return None
        try:
            dog = subprocess.Popen(
                [sys.executable, "-m", "granet_cli.sweep.local_ray", str(session)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            dog = None
        return cls(session, dog)

    def close(self, keep_logs: Path | None = None) -> Path | None:
        """After `ray.shutdown()`: Ray's logs moved to `keep_logs`/<session> (if given), the session
        folder removed, the watchdog released. Returns where the logs went, if they were kept."""
        kept = None
        logs = self.session / "logs"
        if keep_logs is not None and logs.is_dir():
            try:
                keep_logs.mkdir(parents=True, exist_ok=True)
                kept = keep_logs / self.session.name
                shutil.move(str(logs), str(kept))
            except OSError:
                kept = None
        cleanup(self.session, exclude={os.getpid(), self.watchdog.pid if self.watchdog else 0})
        if self.watchdog is not None and self.watchdog.stdin is not None:
            self.watchdog.stdin.close()  # its cue: nothing left for it to do, it exits
            try:
                self.watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return kept


def _our_pids() -> list[int]:
    uid = os.getuid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _uses(pid: int, session: str) -> bool:
    """Whether the process has the session folder on its command line or a file open in it."""
    try:
        if session.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            return True
        fds = f"/proc/{pid}/fd"
        for fd in os.listdir(fds):
            try:
                if os.readlink(f"{fds}/{fd}").startswith(session + "/"):
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


def session_pids(session: Path, exclude: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    """This user's processes that belong to a Ray session (by its folder), this one excepted."""
    text, skip = str(session), {os.getpid(), *exclude}
    return [p for p in _our_pids() if p not in skip and _uses(p, text)]


def cleanup(session: Path, exclude: set[int] = frozenset(), grace: float = 3.0) -> None:  # type: ignore[assignment]
    """End the session's processes (SIGTERM, then SIGKILL after `grace` s) and remove its folder."""
    pids = session_pids(session, exclude)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.1)
        if not pids:
            break
    shutil.rmtree(session, ignore_errors=True)
    latest = session.parent / "session_latest"
    try:
        if latest.is_symlink() and Path(os.readlink(latest)).name == session.name:
            latest.unlink()
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def main(argv: list[str]) -> None:
    """The watchdog: block until the driver's pipe closes, then clean up the session it names."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl+C meant for the driver
    session = Path(argv[0])
    try:
        sys.stdin.buffer.read()
    except (OSError, KeyboardInterrupt):
        pass
    if session.exists():
        cleanup(session)


if __name__ == "__main__":
    main(sys.argv[1:])
