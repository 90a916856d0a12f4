"""The simulated platforms (tests/portable) take their features away, or fail loudly.

Under ``make test-portable`` the first test checks this very interpreter: a
profile that took nothing away would let Linux's features pass for the
fallbacks. Under ``make test`` it checks that nothing was taken away, and the
others start a child interpreter under each profile, as ``make test-portable``
does, and check what it sees there.
"""

from __future__ import annotations

import _socket
import json
import os
import select
import selectors
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Final

import pytest

from .portable.sitecustomize import ENV, PROFILES, matches

ROOT: Final = Path(__file__).resolve().parents[1]
PORTABLE: Final = ROOT / "tests" / "portable"
TIMEOUT: Final = 30.0

_MODULES: Final = {"select": select, "_socket": _socket, "socket": socket}


def _leftovers(profile: str) -> dict[str, list[str]]:
    """The attributes `profile` removes that this interpreter still has, per module."""
    removed = PROFILES[profile].removed
    left = {
        name: sorted(attr for attr in vars(module) if matches(attr, removed[name]))
        for name, module in _MODULES.items()
    }
    flags = socket.MsgFlag.__members__
    left["socket.MsgFlag"] = [flag for flag in flags if matches(flag, removed["socket"])]
    left["selectors"] = [s for s in PROFILES[profile].removed_selectors if hasattr(selectors, s)]
    return {name: attrs for name, attrs in left.items() if attrs}


def test_the_profile_in_force_took_its_features_away() -> None:
    profile = os.environ.get(ENV)
    ours = sys.modules.get("sitecustomize")
    if not profile:  # make test: plain Linux, whatever sitecustomize may run.
        assert getattr(ours, "APPLIED", None) is None
        assert hasattr(select, "epoll") and hasattr(socket, "TCP_INFO")
        return
    assert ours is not None, f"{ENV} is set but no sitecustomize ran: is {PORTABLE} on PYTHONPATH?"
    assert Path(str(ours.__file__)).resolve().parent == PORTABLE
    applied, imported_before = ours.APPLIED, ours.IMPORTED_BEFORE
    assert applied == profile
    assert imported_before == (), "imported before the profile took the features away"
    assert _leftovers(profile) == {}
    default = PROFILES[profile].default_selector
    assert selectors.DefaultSelector is getattr(selectors, default)
    with selectors.DefaultSelector() as selector:
        assert type(selector).__name__ == default


_CHILD: Final = """
import json, os, select, selectors, socket, sys
ours = sys.modules.get("sitecustomize")  # Gone if it raised.
print(json.dumps({
    "applied": getattr(ours, "APPLIED", None),
    "imported_before": getattr(ours, "IMPORTED_BEFORE", None),
    "default": selectors.DefaultSelector.__name__,
    "select": sorted(name for name in dir(select) if "POLL" in name or "poll" in name),
    "socket": [name for name in ("TCP_INFO", "MSG_DONTWAIT") if hasattr(socket, name)],
    "chained": os.environ.get("CHAINED_SITECUSTOMIZE"),
}))
"""
# A sitecustomize further along PYTHONPATH, as a venv or a distribution may have:
# it must still run, and after the profile (it may import socket itself).
_CHAINED: Final = """
import os, select
os.environ["CHAINED_SITECUSTOMIZE"] = "epoll" if hasattr(select, "epoll") else "no epoll"
"""


def _child(profile: str, tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(_CHAINED))
    path = os.pathsep.join([str(PORTABLE), str(ROOT), str(tmp_path)])
    env = dict(os.environ, PYTHONPATH=path)
    env[ENV] = profile
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


_EXPECTED: Final[dict[str, dict[str, Any]]] = {
    "bsd-like": {
        "default": "PollSelector",
        # POLLRDHUP gone, the rest of poll() there.
        "select": [
            "POLLERR",
            "POLLHUP",
            "POLLIN",
            "POLLMSG",
            "POLLNVAL",
            "POLLOUT",
            "POLLPRI",
            "POLLRDBAND",
            "POLLRDNORM",
            "POLLWRBAND",
            "POLLWRNORM",
            "poll",
        ],
        "socket": ["MSG_DONTWAIT"],
    },
    "windows-like": {"default": "SelectSelector", "select": [], "socket": []},
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_a_child_starts_on_the_simulated_platform(profile: str, tmp_path: Path) -> None:
    done = _child(profile, tmp_path, _CHILD)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    seen = json.loads(done.stdout)
    expected = _EXPECTED[profile]
    assert seen == {
        "applied": profile,
        "imported_before": [],
        "chained": "no epoll",
        **expected,
    }


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_profile_prints_nothing(profile: str, tmp_path: Path) -> None:
    done = _child(profile, tmp_path, "import pysock")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_an_unknown_profile_is_not_taken_for_linux(tmp_path: Path) -> None:
    done = _child("solaris-like", tmp_path, _CHILD)
    assert "KeyError: 'solaris-like'" in done.stderr  # Python's "Error in sitecustomize".
    assert json.loads(done.stdout)["applied"] is None
