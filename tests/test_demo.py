"""`make demo`, the main job: it runs `python -m pysock._demo`, which must show every part."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # A cold interpreter and three local servers on a loaded machine.


def test_make_demo_runs_the_demo_module() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None, "the Makefile has no demo target"
    assert "-m pysock._demo" in recipe.group(1)


def test_the_demo_prints_each_part_and_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pysock._demo"],
        cwd=ROOT,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "Traceback" not in out + result.stderr.decode()
    expected = [
        "== part 1: plain TCP",
        "-> writable.close()",  # the half-close
        "<- read b''",  # the server's EOF
        "== closed: None",
        "== part 2: TLS",
        "tls.version='TLSv1.3'",
        "== part 3: STARTTLS",
        "-> tls_sock = sock.start_tls()",
        "== old socket: upgraded=True",
        "== part 4: beyond Workers",
        "destination refused: 127.0.0.1 is a loopback address",
        "== a port where nothing listens",
        "ConnectError errno=111",
        "== done in ",
    ]
    positions = [out.find(text) for text in expected]
    missing = [text for text, at in zip(expected, positions) if at < 0]
    assert not missing, f"the demo transcript lacks {missing}:\n{out}"
    assert positions == sorted(positions), f"the parts come out of order:\n{out}"
