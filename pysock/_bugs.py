"""Reporting pysock's own bugs from threads that no caller waits on.

The selector thread (`pysock._loop`) and the DNS workers (`pysock._workers`)
run callbacks for sockets whose callers are elsewhere. The callbacks route
their own errors to the sockets' futures, so one that still raises is a bug
in pysock, and no caller is there to receive it. It must neither vanish nor
kill the thread, which serves every other socket: `guarded` catches it and
`report_bug` reports it as Python reports an exception in ``__del__``, through
`sys.unraisablehook` (pytest's hook turns it into a test failure), and the
thread goes on.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, Callable, Optional

__all__ = ["guarded", "report_bug"]


class _Unraisable:
    """The argument `sys.unraisablehook` takes, built in Python."""

    def __init__(
        self, exc: BaseException, obj: object, where: str = "the selector thread"
    ) -> None:
        self.exc_type: type[BaseException] = type(exc)
        self.exc_value: Optional[BaseException] = exc
        self.exc_traceback = exc.__traceback__
        self.err_msg: Optional[str] = f"pysock: exception in {where}"
        self.object = obj


def report_bug(exc: BaseException, obj: object, where: str = "the selector thread") -> None:
    """Report an exception no caller can receive, as Python reports one in ``__del__``.

    An installed hook (pytest's, which fails the test) gets it. The default hook
    accepts only its own argument type, which Python code cannot build, so in
    its place the report is printed the way it prints one.
    """
    args = _Unraisable(exc, obj, where)
    hook = sys.unraisablehook
    if hook is not sys.__unraisablehook__:
        hook(args)
        return
    stderr = sys.stderr
    if stderr is None:
        return
    print(f"{args.err_msg}: {obj!r}", file=stderr)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=stderr)


def guarded(callback: Callable[..., None], *args: Any) -> None:
    """Run ``callback(*args)`` on the selector thread; report what it raises and go on."""
    try:
        callback(*args)
    except Exception as exc:
        report_bug(exc, callback)
