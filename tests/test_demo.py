"""`make demo`, the main job: it runs `python -m pysock.cli.demo`, which must show every part."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # A cold interpreter and three local servers on a loaded machine.


def test_make_demo_runs_the_demo_module() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None, "the Makefile has no demo target"
    assert "-m pysock.cli.demo" in recipe.group(1)


def _run_demo() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pysock.cli.demo"],
        cwd=ROOT,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "Traceback" not in out + result.stderr.decode()
    return out


@pytest.fixture(scope="module")
def transcript() -> str:
    return _run_demo()


def test_the_demo_prints_each_part_in_order(transcript: str) -> None:
    expected = [
        "== part 1: plain TCP",
        ">>> sock = connect('127.0.0.1:",
        ">>> sock.writable.write(b'hello\\n')",
        ">>> sock.readable.readline()\nb'echo: hello\\n'\n",
        ">>> sock.writable.close()",  # the half-close
        ">>> sock.readable.read()  # up to the server's EOF: nothing more\nb''\n",
        ">>> sock.closed.result(5.0)",
        "== part 2: TLS",
        "tls_context=ctx",
        "('TLSv1.3', ",
        "== part 3: STARTTLS",
        ">>> tls_sock = sock.start_tls()",
        ">>> sock.upgraded",
        "SocketClosedError: ",
        ">>> tls_sock.readable.readline()\nb'221 Bye\\r\\n'\n",
        "== part 4: beyond Workers",
        "destination refused: 127.0.0.1 is a loopback address",
        ">>> error.errno == errno.EACCES",
        "== part 5: a port where nothing listens",
        ">>> error.errno == errno.ECONNREFUSED",
        "== done in ",
    ]
    positions = [transcript.find(text) for text in expected]
    missing = [text for text, at in zip(expected, positions) if at < 0]
    assert not missing, f"the demo transcript lacks {missing}:\n{transcript}"
    assert positions == sorted(positions), f"the parts come out of order:\n{transcript}"


def test_every_call_shown_is_python_a_reader_can_copy(transcript: str) -> None:
    calls = [line[4:] for line in transcript.splitlines() if line.startswith(">>> ")]
    assert len(calls) > 40, transcript
    for call in calls:
        ast.parse(call)  # a SyntaxError names the line
    shown = "\n".join(calls)
    for api in ("connect(", ".writable.write(", ".readable.readline()", ".start_tls()"):
        assert api in shown, f"no call of {api} is shown:\n{transcript}"


def test_errno_is_shown_one_way(transcript: str) -> None:
    """By its portable name, compared at the prompt, the number only in that line's comment:
    never `errno=111`, `ECONNREFUSED (111)` or an error's repr (`ConnectError(111, ...)`)."""
    lines = [line for line in transcript.splitlines() if "errno" in line.lower()]
    assert len(lines) == 2, lines
    for line in lines:
        match = re.fullmatch(
            r">>> error\.errno == errno\.(E[A-Z]+)  # \1 is \d+ on this system", line
        )
        assert match, f"errno shown another way: {line!r}"
    assert not re.search(r"ConnectError\(\d", transcript), "an error's repr shows its errno"
    assert transcript.count("\nTrue\n") >= len(lines)
