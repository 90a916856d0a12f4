"""The parent's side: run a scenario in a fresh interpreter, collect its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Final, Optional

from .basics import Report

ROOT: Final = Path(__file__).resolve().parents[3]
# Generous: a child runs for about a second, on a shared, loaded machine. Below
# pytest-timeout's 60 s, so that a hung child is killed and reported here.
CHILD_TIMEOUT: Final = 40.0
# The timeouts a scenario runs with: none (blocking, the C fast path) and one no
# call reaches.
TIMEOUTS: Final = [None, 5.0]


class ChildRun:
    """What a child interpreter reported, printed on stderr, and how it ended."""

    def __init__(
        self, report: Report, stderr: str, returncode: Optional[int], ended: float
    ) -> None:
        self.report = report
        self.stderr = stderr
        self.returncode = returncode  # None: it hung and was killed.
        self.ended = ended  # time.monotonic() when its pipes closed and it was reaped.

    def exit_duration(self) -> float:
        """Seconds from the child's main thread returning to the process being gone."""
        return self.ended - float(self.report["main_returned_at"])


def run_child(*args: str, hang_after: float = CHILD_TIMEOUT) -> ChildRun:
    # This tree first; an inherited entry stays (tests/portable: a simulated platform).
    inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *inherited]))
    for name in ("PYTHONWARNINGS", "PYTHONDEVMODE"):  # The user's default: no -W, no -X dev.
        env.pop(name, None)
    command = [sys.executable, "-m", "tests.peers.child_scripts", *args]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        returncode: Optional[int]
        try:
            stdout, stderr = process.communicate(timeout=hang_after)
            returncode = process.returncode
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate(timeout=CHILD_TIMEOUT)
            returncode = None
        except BaseException:  # pytest-timeout's failure: Popen's exit would wait forever.
            process.kill()
            raise
        ended = time.monotonic()
    report: Report = {}
    for line in stdout.decode().splitlines():
        report.update(json.loads(line))
    return ChildRun(report, stderr.decode(errors="replace"), returncode, ended)


def timeout_id(timeout: Optional[float]) -> str:
    return f"timeout={timeout}"
