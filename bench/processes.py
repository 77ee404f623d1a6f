"""Start and stop the processes a benchmark measures, on free loopback ports, by pid.

Kept small on purpose: a free port, a process whose output goes to a log file, a wait for
its port, a stop by pid (SIGTERM, then SIGKILL), and the CPU time and memory of a pid read
from /proc. Nothing here touches the shared services on 5432/6379.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path
    last_cpu: float = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        """The process and its descendants (a server's worker processes)."""
        found, queue = [], [self.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    queue.extend(int(child) for child in task.read_text().split())
                except OSError:  # The task ended meanwhile.
                    continue
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time the process and its workers have used so far (once it has
        exited: the last figure read while it ran)."""
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                if pid == self.pid:
                    return self.last_cpu
                continue
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        self.last_cpu = total
        return self.last_cpu

    def rss_bytes(self) -> int:
        """Resident memory now of the process and its workers (statm: resident pages times page
        size; pages shared between them are counted once per process)."""
        total = 0
        for pid in self.pids():
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
            except OSError:
                continue
        return total

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(
    name: str,
    command: list[str],
    *,
    port: int,
    env: dict[str, str],
    log_dir: Path,
    cwd: Path,
    ready_timeout: float = 30.0,
) -> Process:
    """Start `command` (which listens on `port`) and wait until the port accepts connections."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    process = Process(name=name, popen=popen, port=port, log_path=log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode}:\n{process.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"{name} did not listen on port {port} in {ready_timeout}s")


def stop(process: Process, timeout: float = 10.0) -> None:
    """SIGTERM the process by its pid (a server stops its own workers), then SIGKILL it and its
    workers if it has not gone after `timeout`."""
    if process.popen.poll() is not None:
        return
    tree = process.pids()
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.popen.wait(timeout)


def start_redis(log_dir: Path, cwd: Path) -> Process:
    """A private Redis on a free port: nothing saved, nothing shared with anyone else."""
    port = free_port()
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(log_dir),
    ]
    return start("redis", command, port=port, env=dict(os.environ), log_dir=log_dir, cwd=cwd)
