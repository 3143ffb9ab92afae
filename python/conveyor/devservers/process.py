"""Starting, finding and stopping one background server process by pid file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from conveyor.errors import DevServerError


class ServerProcess:
    """A server we start detached, remember by pid file, and stop by pid.

    One of `markers` must appear in the process's command line, so a pid reused
    by an unrelated process after a reboot is never taken for ours.
    """

    def __init__(self, name: str, pid_file: Path, log_file: Path, markers: Sequence[str]) -> None:
        self.name = name
        self.pid_file = pid_file
        self.log_file = log_file
        self.markers = [m.encode() for m in markers]

    def pid(self) -> int | None:
        """The pid of our running server, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError):
            return None
        # A zombie has an empty command line, so it never matches the marker.
        if not any(m in cmdline for m in self.markers):
            return None
        return pid

    def start(self, argv: Sequence[str], cwd: Path) -> int:
        """Start the server detached from our session; returns its pid."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def wait_ready(self, probe: Callable[[], bool], timeout_s: float) -> None:
        """Poll `probe` until it says ready; fail early if the process dies."""
        deadline = time.monotonic() + timeout_s
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError) as err:
            raise DevServerError(f"{self.name} has no pid file at {self.pid_file}") from err
        while time.monotonic() < deadline:
            # By pid, not by marker: a server may be retitling itself right now.
            if not _alive(pid):
                raise DevServerError(f"{self.name} exited while starting.\n{self.log_tail()}")
            if probe():
                return
            time.sleep(0.2)
        raise DevServerError(
            f"{self.name} did not become ready within {timeout_s:.0f}s.\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout_s`; returns whether it was running."""
        pid = self.request_stop()
        if pid is None:
            return False
        self.wait_stopped(pid, timeout_s)
        return True

    def kill(self) -> bool:
        """SIGKILL at once, as a crash or a pulled plug would; returns whether
        it was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        self.wait_stopped(pid, 0)
        return True

    def request_stop(self) -> int | None:
        """Send SIGTERM without waiting; returns the pid, or None if not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        os.kill(pid, signal.SIGTERM)
        return pid

    def wait_stopped(self, pid: int, timeout_s: float = 20.0) -> None:
        """Wait for `pid` to exit after `request_stop`, SIGKILL after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_file})"
        return f"last lines of {self.log_file}:\n" + "\n".join(text[-lines:])


def require_free_port(port: int, what: str) -> None:
    """Raise unless nothing listens on 127.0.0.1:`port`: a server of someone
    else's there would otherwise be taken for ours."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise DevServerError(
                f"port {port} (for {what}) is already in use by another process; "
                "stop it, or choose other ports"
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    # Our own children linger as zombies until reaped; reap and treat as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] != "Z":
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


def require_program(program: str, debian_package: str, why: str) -> str:
    """Path of `program`; installs `debian_package` with apt-get when running
    as root on Debian, otherwise raises with how to get it."""
    found = shutil.which(program)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{program} is missing; installing Debian's {debian_package} ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", debian_package],
        ):
            done = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
            if done.returncode != 0:
                raise DevServerError(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}")
        found = shutil.which(program)
        if found:
            return found
    raise DevServerError(
        f"{program} is needed {why} but is not installed. "
        f"On Debian or Ubuntu: `sudo apt-get install {debian_package}`."
    )
