"""Simulated platforms: the suite on Linux with Linux's features taken away.

pysock promises the same behaviour on every platform: epoll, POLLRDHUP,
TCP_INFO and MSG_DONTWAIT are optimisations with a portable fallback. This
package proves the fallbacks on a Linux machine:
`sitecustomize` deletes the features a profile lacks from ``select``,
``socket`` and ``selectors`` when the interpreter starts, before pytest or
pysock is imported, and ``python -m tests.portable`` (``make test-portable``)
runs the core, TLS, lifecycle and CLI tests under each profile in a child
interpreter with that environment:

* ``bsd-like``: poll() without POLLRDHUP; no epoll, no TCP_INFO;
  ``DefaultSelector`` is ``PollSelector``;
* ``windows-like``: select() only (no poll, epoll or kqueue); no MSG_DONTWAIT,
  no TCP_INFO; ``DefaultSelector`` is ``SelectSelector``.

What a simulation cannot show: kqueue (macOS and the BSDs have it, Linux has
not, so the bsd-like profile runs the poll fallback), Windows' own socket
semantics (``select()``'s 512-socket cap, no ``os.fork``, how a reset is
reported) and anything decided by ``sys.platform``. One profile by hand::

    PYTHONPATH=tests/portable PYSOCK_PLATFORM_PROFILE=bsd-like .venv/bin/python -m pytest ...
"""
