"""``make test-portable``: the core, TLS, lifecycle and CLI tests under each profile.

Each profile is one pytest run in a child interpreter whose environment names
the profile and puts tests/portable (for `sitecustomize`) and this working
tree (so that the CLI and the child scripts import this pysock too) first on
``PYTHONPATH``; every process the tests start inherits both. The runs go one
after the other, so that the timing tests see the machine they see under
``make test``. The exit status is 1 if any run failed.

    python -m tests.portable                          # both profiles
    python -m tests.portable --profile bsd-like -- -x -k closed
    python -m tests.portable -- --junitxml=/tmp/portable-{profile}.xml

``{profile}`` in an argument after ``--`` becomes the profile's name.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from .plugin import EXIT_HUNG
from .sitecustomize import ENV, PROFILES

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parents[1]

# The modules every profile runs, in this order: the profile's own check first,
# so that a profile that took nothing away fails at once.
MODULES: Final = (
    "test_portable_*.py",
    "test_io.py",
    "test_open.py",
    "test_close.py",
    "test_half_open.py",
    "test_timeouts.py",
    "test_nothing_lost.py",
    "test_unix_and_adopt.py",
    "test_tls.py",
    "test_starttls.py",
    "test_security_*.py",
    "test_faults_*.py",
    "test_cli.py",
    "test_process*.py",
)
# Per profile: more tests. 10,000 idle sockets see the peer's reset: poll() takes
# them all; select() cannot (FD_SETSIZE: descriptors below 1024 on Linux, 512
# sockets per call in CPython's Windows build), so windows-like leaves it out.
EXTRA: Final[dict[str, tuple[str, ...]]] = {
    "bsd-like": (
        "tests/test_load.py::test_10000_idle_sockets_share_one_thread_and_all_see_the_peers_reset",
    ),
    "windows-like": (),
}
# A whole run: about two minutes when it passes; failing tests wait out their timeouts.
RUN_TIMEOUT: Final = 3600.0
# No cache: a portable run must not change what `pytest --lf` replays after `make test`.
PYTEST_OPTIONS: Final = ("-p", "no:cacheprovider", "-p", "tests.portable.plugin")


def test_paths() -> list[str]:
    """The test modules of `MODULES`, relative to the repository, globs expanded."""
    paths: list[str] = []
    for pattern in MODULES:
        found = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").glob(pattern))
        if not found:
            raise SystemExit(f"tests/portable: no test module matches {pattern!r}")
        paths.extend(path for path in found if path not in paths)
    return paths


def environment(profile: str) -> dict[str, str]:
    env = dict(os.environ)
    env[ENV] = profile
    inherited = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), *inherited])
    return env


def run(profile: str, pytest_args: list[str]) -> tuple[int, float]:
    """One profile's pytest run; its exit status and duration in seconds."""
    tests = [*test_paths(), *EXTRA[profile]]
    pytest_args = [arg.replace("{profile}", profile) for arg in pytest_args]
    command = [sys.executable, "-m", "pytest", *PYTEST_OPTIONS, *tests, *pytest_args]
    shown = " ".join(["pytest", *pytest_args, f"<{len(tests)} test modules and ids>"])
    print(f"\n== profile {profile}: {ENV}={profile} {shown}", flush=True)
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, env=environment(profile), timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"== profile {profile}: still running after {RUN_TIMEOUT:.0f} s, killed")
        return 1, time.monotonic() - start
    return done.returncode, time.monotonic() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.portable", description=__doc__)
    parser.add_argument("--profile", action="append", choices=sorted(PROFILES))
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    results = {profile: run(profile, args.pytest_args) for profile in args.profile or PROFILES}
    print()
    for profile, (status, seconds) in results.items():
        verdict = "passed" if status == 0 else f"FAILED (pytest exit status {status})"
        if status == EXIT_HUNG:
            verdict = "FAILED (tests ended, but the interpreter hung at exit: see above)"
        print(f"== profile {profile}: {verdict} in {seconds:.0f} s")
    return 0 if all(status == 0 for status, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
