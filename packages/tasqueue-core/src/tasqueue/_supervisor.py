"""``tasqueue worker APP --processes N``: N worker processes under one supervisor.

Each worker is a ``tasqueue worker APP`` process of its own (a fresh interpreter, so nothing of
the supervisor's state leaks into it), in a session of its own so that a Ctrl-C on the terminal
reaches the supervisor only and is passed on exactly once. A worker that dies is started again
after a backoff that grows while it keeps dying quickly, and the supervisor says why it died
(its exit status or the signal that killed it). The first SIGTERM/SIGINT drains every worker
(each finishes its running jobs within its ``shutdown_timeout``); a second one makes them hand
their jobs back at once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tasqueue._logs import SLOT_ENV

log = logging.getLogger("tasqueue.supervisor")

_POLL = 0.1
_BACKOFF_START, _BACKOFF_MAX = 0.5, 30.0
#: A worker that ran this long before dying starts its backoff over.
_HEALTHY_AFTER = 30.0


def why(returncode: int) -> str:
    """A process's end in words: ``killed by SIGKILL``, ``exited with status 1``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


@dataclass
class _Slot:
    number: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    history: list[int] = field(default_factory=list)


class Supervisor:
    """Runs ``processes`` copies of ``command`` (a worker's argv), restarting the ones that die."""

    def __init__(self, command: Sequence[str], processes: int) -> None:
        if processes < 1:
            msg = f"--processes must be at least 1, got {processes}"
            raise ValueError(msg)
        self.command = list(command)
        self.slots = [_Slot(n) for n in range(processes)]
        self.signals = 0
        self._forwarded = 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals += 1

    def _spawn(self, slot: _Slot) -> None:
        env = {**os.environ, SLOT_ENV: str(slot.number)}
        # A session of its own: a terminal's Ctrl-C reaches the supervisor, which passes it on once.
        slot.proc = subprocess.Popen(self.command, env=env, start_new_session=True)  # noqa: S603 - our own worker command
        slot.started = time.monotonic()
        log.info("started worker %d (pid %d)", slot.number, slot.proc.pid)

    def run(self) -> int:
        """Supervise until a signal has drained every worker; return the exit status."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in self.slots:
                self._spawn(slot)
            log.info("supervising %d worker process(es); SIGTERM or Ctrl-C drains them", len(self.slots))
            while True:
                if self.signals > self._forwarded:
                    self._forward()
                if self._forwarded and all(s.proc is None for s in self.slots):
                    log.info("all workers stopped")
                    return 0
                self._reap()
                time.sleep(_POLL)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_leftovers()

    def _forward(self) -> None:
        first = self._forwarded == 0
        self._forwarded = self.signals
        live = [s for s in self.slots if s.proc is not None and s.proc.poll() is None]
        if first:
            log.info("draining %d worker(s): they finish running jobs, then stop; signal again to hand jobs back now", len(live))
        else:
            log.warning("second signal: workers hand their running jobs back now")
        for slot in live:
            assert slot.proc is not None
            slot.proc.send_signal(signal.SIGTERM)
        for slot in self.slots:
            if slot.proc is None:
                slot.restart_at = float("inf")  # stopping: nothing is started again

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            proc = slot.proc
            if proc is None:
                if not self._forwarded and now >= slot.restart_at:
                    self._spawn(slot)
                continue
            code = proc.poll()
            if code is None:
                continue
            slot.proc = None
            slot.history.append(proc.pid)
            if self._forwarded:
                log.info("worker %d (pid %d) stopped: %s", slot.number, proc.pid, why(code))
                continue
            ran = now - slot.started
            slot.failures = 1 if ran >= _HEALTHY_AFTER else slot.failures + 1
            delay = min(_BACKOFF_START * 2 ** (slot.failures - 1), _BACKOFF_MAX)
            slot.restart_at = now + delay
            log.warning(
                "worker %d (pid %d) died after %.1fs: %s; restarting in %.1fs", slot.number, proc.pid, ran, why(code), delay
            )

    def _kill_leftovers(self) -> None:
        """Only reached with live workers when the supervisor itself fails: do not orphan them."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.kill()
                slot.proc.wait()


def worker_command(app: str, options: Sequence[str]) -> list[str]:
    """The argv of one worker process: ``tasqueue worker APP`` with the same options, without ``--processes``."""
    return [sys.executable, "-m", "tasqueue.cli", "worker", app, *options]
