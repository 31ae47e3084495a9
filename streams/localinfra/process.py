"""Processes the launcher owns: pid files, liveness, detached spawning, stopping, port probes.

A service started here runs in its own session with its output in a log file, so it outlives
the command that started it; its pid file is the only claim of ownership ``down`` acts on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from streams.errors import InfraError

log = logging.getLogger(__name__)


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file``, or None when the file is missing or does not hold a pid."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def write_pid(pid_file: Path, pid: int) -> None:
    tmp = pid_file.with_suffix(".pid.tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def remove_pid(pid_file: Path) -> None:
    pid_file.unlink(missing_ok=True)


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs; zombies (exited, not yet reaped) count as gone."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child, now reaped
            return False
    except ChildProcessError:
        pass  # not our child (started by an earlier command): its parent is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def command_line(pid: int) -> str:
    """The command line of ``pid`` (empty when it cannot be read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except FileNotFoundError:
        pass
    except OSError:
        return ""
    # No /proc (macOS): ask ps.
    result = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def owned_pid(pid_file: Path, *markers: str, remove_stale: bool = True) -> int | None:
    """The pid our pid file names if that process is alive and still ours, else None.

    A stale pid file (process gone, or the pid reused by an unrelated program: its command
    line lacks ``markers``) is removed, so nothing else is ever signalled.
    """
    pid = read_pid(pid_file)
    cmdline = command_line(pid) if pid is not None and is_alive(pid) else ""
    if pid is not None and cmdline and all(marker in cmdline for marker in markers):
        return pid
    if remove_stale and pid_file.exists():
        log.info("removing stale pid file %s (pid %s is not ours)", pid_file, pid)
        remove_pid(pid_file)
    return None


def spawn_detached(argv: Sequence[str], *, log_path: Path) -> int:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``; its pid.

    posix_spawn rather than subprocess.Popen: the service is meant to outlive us, and a Popen
    object complains (ResourceWarning) when it is collected while its process still runs.
    Give ``argv`` absolute paths: the process inherits our working directory.
    """
    log.debug("spawning %s (output to %s)", " ".join(argv), log_path)
    appending = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    return os.posix_spawnp(
        argv[0],
        list(argv),
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_path), appending, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


def terminate(pid: int, *, grace_s: float = 20.0) -> float:
    """SIGTERM ``pid``, SIGKILL it after ``grace_s``; returns the seconds it took to exit."""
    started = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: not is_alive(pid), timeout_s=grace_s):
        log.warning("pid %d did not exit %.0f s after SIGTERM; sending SIGKILL", pid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not wait_for(lambda: not is_alive(pid), timeout_s=5.0):
            raise InfraError(
                f"pid {pid} is still alive after SIGTERM and SIGKILL",
                hint=f"check it with `ps -o pid,stat,args -p {pid}`",
            )
    return time.monotonic() - started


def wait_for(condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``condition()`` until it is true (returns True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def port_open(host: str, port: int, *, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_bindable(host: str, port: int) -> bool:
    """True when a server could listen on ``host:port`` now (nothing else holds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def rotate(path: Path) -> None:
    """Keep one previous generation of a log (``x.log`` -> ``x.log.1``)."""
    if path.exists():
        path.replace(path.with_name(path.name + ".1"))


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock so two launchers never start the same service twice."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
