"""Take Linux's platform features away at interpreter start: a simulated platform.

Python imports ``sitecustomize`` while it starts, before the main module and
before any user code (site.py, after the ``.pth`` files). With this directory
first on ``PYTHONPATH`` and ``PYSOCK_PLATFORM_PROFILE`` set to a name of
`PROFILES`, the interpreter and every child it starts (they inherit both
variables) run on Linux with the named features deleted from ``select``,
``socket`` (and ``_socket``, which it re-exports) and ``selectors``. pysock
then finds the platform by feature detection, as it must on the real one, and
needs no hook for the simulation.

The order matters: ``socket`` imports ``selectors``, which picks
``DefaultSelector`` once, at import, from what ``select`` offers, and
``socket`` builds ``MsgFlag`` from what ``_socket`` offers. So ``select`` and
``_socket`` lose their attributes first, then ``socket`` and ``selectors`` are
imported; ``selectors`` is still set explicitly, in case something imported it
before this module ran.

This module prints nothing: children's output is what the tests check. What it
did is recorded in `APPLIED` and `IMPORTED_BEFORE`, which
tests/test_portable_profile.py checks, so a profile that silently does nothing
fails. Another ``sitecustomize`` further along ``sys.path`` (a venv's or the
distribution's) still runs, after this one. Imported under another name (as
``tests.portable.sitecustomize``, for its tables) it changes nothing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from typing import Final, Optional

ENV: Final = "PYSOCK_PLATFORM_PROFILE"


class Profile:
    """What a simulated platform lacks, and the selector it defaults to."""

    def __init__(
        self,
        removed: dict[str, tuple[str, ...]],
        default_selector: str,
        selectors: tuple[str, ...],
    ) -> None:
        # Module name -> attribute names; a name ending in "*" is a prefix.
        self.removed = removed
        self.default_selector = default_selector
        self.removed_selectors = selectors


_EPOLL: Final = ("epoll", "EPOLL*")
_KQUEUE: Final = ("kqueue", "kevent", "KQ_*")  # Not on Linux: deleted if ever present.
_DEVPOLL: Final = ("devpoll",)  # Solaris: likewise.

PROFILES: Final[dict[str, Profile]] = {
    # macOS and the BSDs have poll() but no POLLRDHUP, no epoll and no TCP_INFO.
    # They have kqueue, which cannot be simulated here (module docstring of
    # tests/portable/__init__.py): this profile is their poll-and-peek fallback.
    "bsd-like": Profile(
        {
            "select": (*_EPOLL, *_DEVPOLL, *_KQUEUE, "POLLRDHUP"),
            "_socket": ("TCP_INFO",),
            "socket": ("TCP_INFO",),
        },
        default_selector="PollSelector",
        selectors=("EpollSelector", "DevpollSelector", "KqueueSelector"),
    ),
    # Windows: select() only, no MSG_DONTWAIT, no TCP_INFO.
    "windows-like": Profile(
        {
            "select": ("poll", "POLL*", *_EPOLL, *_DEVPOLL, *_KQUEUE),
            "_socket": ("MSG_DONTWAIT", "TCP_INFO"),
            "socket": ("MSG_DONTWAIT", "TCP_INFO"),
        },
        default_selector="SelectSelector",
        selectors=("EpollSelector", "DevpollSelector", "KqueueSelector", "PollSelector"),
    ),
}

# The profile this interpreter runs under, once applied; None: none asked for.
APPLIED: Optional[str] = None
# Modules whose import decides a platform question, and that were imported
# before the profile was applied (they may have seen the features): must be empty.
WATCHED_MODULES: Final = ("pysock", "select", "selectors", "socket", "_socket", "subprocess")
IMPORTED_BEFORE: tuple[str, ...] = ()


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether attribute `name` is one of `patterns` (a trailing "*" is a prefix)."""
    return any(
        name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern
        for pattern in patterns
    )


def _delete(module_name: str, patterns: tuple[str, ...]) -> None:
    module = importlib.import_module(module_name)
    for name in [name for name in vars(module) if matches(name, patterns)]:
        delattr(module, name)


def apply(name: str) -> None:
    """Delete the features profile `name` lacks; see the module docstring for the order."""
    global APPLIED, IMPORTED_BEFORE
    profile = PROFILES[name]  # KeyError: an unknown profile must not pass for Linux.
    IMPORTED_BEFORE = tuple(module for module in WATCHED_MODULES if module in sys.modules)
    _delete("select", profile.removed["select"])
    _delete("_socket", profile.removed["_socket"])
    _delete("socket", profile.removed["socket"])  # Imports selectors, which now chooses right.
    import selectors

    for selector in profile.removed_selectors:
        if hasattr(selectors, selector):
            delattr(selectors, selector)
    selectors.DefaultSelector = getattr(selectors, profile.default_selector)  # type: ignore[misc]
    APPLIED = name


def _chain() -> None:
    """Run the next ``sitecustomize`` on ``sys.path``, as if this one were not there."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":
    if os.environ.get(ENV):
        apply(os.environ[ENV])  # First: the next sitecustomize may import socket.
    _chain()
