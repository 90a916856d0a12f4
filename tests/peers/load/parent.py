"""The parent's side: a peer process, started, asked and stopped over its pipes."""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Optional

from .protocol import HOST

MODULE: Final = "tests.peers.load"
ROOT: Final = Path(__file__).resolve().parents[3]


class PeerProcess:
    """A running peer process, as the parent sees it (a context manager)."""

    def __init__(self, mode: str, lifetime: float, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", MODULE, mode, str(lifetime), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(ROOT),
        )
        self.stopped: Optional[dict[str, Any]] = None
        try:
            self.ports: dict[str, int] = self.receive(60.0)["ports"]
        except BaseException:
            self.close()
            raise

    def address(self, name: str = "echo") -> str:
        return f"{HOST}:{self.ports[name]}"

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        """The peer's next message; `TimeoutError` if none comes within `timeout`."""
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"the peer sent nothing within {timeout} s")
        line = stdout.readline()
        if not line:
            raise EOFError(f"the peer exited (status {self.process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def request(self, op: str, timeout: float = 60.0) -> dict[str, Any]:
        self.send({"op": op})
        return self.receive(timeout)

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """Ask the peer to stop; return its final statistics."""
        if self.stopped is None:
            self.stopped = self.request("stop", timeout)
        return self.stopped

    def close(self) -> None:
        """Stop the process whatever its state, and release its pipes."""
        with contextlib.suppress(OSError, ValueError):
            if self.process.stdin is not None:
                self.process.stdin.close()  # EOF: a live peer exits.
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()
