"""Fork generations: how pysock code knows it runs in a forked child, and what a child redoes.

A child made by `os.fork()` inherits a copy of every pysock object but only
the thread that forked: the ``pysock-selector`` thread, the DNS workers and
any thread that held a lock are not there. The parent's descriptors are
shared with the child, and so is the kernel's hang-up set of the parent's
loop: a ``shutdown()``, an ``epoll_ctl`` or a close sent from the child would
change the parent's connections under it.

So this module keeps a generation number that grows in each forked child
(`fork_generation`): a connection remembers the one it was made in, and one
made in another generation is the parent's, which the child must not touch.
Code that holds process-wide state (the loop, the DNS pool, the table of live
connections) registers a callback with `register_after_fork`; the hook
installed with `os.register_at_fork` bumps the generation and then runs the
callbacks in the order they were registered, in the child only. `pysock._loop`
registers when it is imported, before any module that uses the loop can, so
every other callback runs after the child has dropped the parent's loop.

Platforms without `os.register_at_fork` (Windows) have no ``fork()``: the
generation stays 0 there.
"""

from __future__ import annotations

import os
from typing import Callable

__all__ = ["fork_generation", "register_after_fork"]

_fork_generation = 0
_after_fork_callbacks: list[Callable[[], None]] = []


def fork_generation() -> int:
    """A number that changes in a child process after each `os.fork()`."""
    return _fork_generation


def register_after_fork(callback: Callable[[], None]) -> None:
    """Run `callback` in each forked child, after those registered before it."""
    _after_fork_callbacks.append(callback)


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1
    for callback in _after_fork_callbacks:
        callback()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
