"""The read model (docs/api.md, "SocketReader"): what each read must return from the
bytes the peer sent, and the strategies that draw reads and payloads.
"""

from __future__ import annotations

import array
import ctypes
from dataclasses import dataclass
from typing import Any, Callable

from hypothesis import strategies as st

from pysock import IncompleteReadError

from .options import OMITTED

# -- the read model (docs/api.md, "SocketReader") ------------------------------------------

# Sizes below sys.maxsize only, -1 as the only negative read() size, no bool
# sizes and no None for read1(): each of those is pinned by a regression test
# (test_reader_size_arguments_*, test_huge_sizes_*).
_SIZES = st.one_of(
    st.integers(0, 64),
    st.integers(0, 300_000),
    st.sampled_from([1, 65535, 65536, 65537, 131072]),
)
_BAD_SIZES = st.sampled_from([1.5, "3", b"3", [1], 2.0])


def read_ops() -> st.SearchStrategy[tuple[Any, ...]]:
    separators = st.one_of(
        st.sampled_from([b"\n", b"\r\n", b"--", b"x", b"\n\n"]),
        st.binary(min_size=1, max_size=4),
        st.binary(min_size=1, max_size=4).map(bytearray),
    )
    bad_separators = st.sampled_from([b"", "\n", memoryview(b"\n"), None, 10, [b"\n"]])
    limits = st.one_of(_SIZES, st.sampled_from([-1, 0, True, 1.5, None, "8"]))
    return st.one_of(
        st.tuples(st.just("read"), st.one_of(st.none(), st.just(-1), _SIZES, _BAD_SIZES)),
        st.tuples(st.just("read1"), st.one_of(st.just(-1), _SIZES, _BAD_SIZES)),
        st.tuples(st.just("readline"), st.one_of(st.none(), st.integers(-3, -1), _SIZES)),
        st.tuples(st.just("readline"), _BAD_SIZES),
        st.tuples(
            st.just("readexactly"),
            st.one_of(_SIZES, st.integers(-5, -1), st.sampled_from([True, None, 1.5, "2"])),
        ),
        st.tuples(st.just("readuntil"), separators, st.one_of(st.just(OMITTED), limits)),
        st.tuples(st.just("readuntil"), bad_separators, st.just(OMITTED)),
        st.tuples(st.sampled_from(["readinto", "readinto1"]), buffers()),
        # peek(1.5) with bytes stashed: pinned by test_peek_checks_...
        st.tuples(st.just("peek"), st.integers(0, 10)),
        st.tuples(st.just("next")),
        st.tuples(st.just("readlines"), st.one_of(st.none(), st.integers(-1, 200))),
    )


@dataclass(frozen=True)
class BufferSpec:
    """A target for readinto(), built fresh in each run (hypothesis may replay an example)."""

    kind: str
    size: int

    def build(self) -> Any:
        size = self.size
        if self.kind == "bytearray":
            return bytearray(size)
        if self.kind == "memoryview":
            return memoryview(bytearray(size))
        if self.kind == "array":
            return array.array("i", [0] * size)
        if self.kind == "matrix":  # C-contiguous, two dimensions
            return memoryview(bytearray(max(size, 1) * 4)).cast("B", (max(size, 1), 4))
        if self.kind == "ctypes":
            return (ctypes.c_char * size)()
        if self.kind == "strided":  # not contiguous: not a writable bytes-like object
            return memoryview(bytearray(size * 2))[::2]
        if self.kind == "bytes":  # read-only
            return bytes(size)
        if self.kind == "str":
            return "x" * size
        return None

    @property
    def writable(self) -> bool:
        if self.kind == "strided":  # one element is contiguous after all
            return bool(self.build().c_contiguous)
        return self.kind in ("bytearray", "memoryview", "array", "matrix", "ctypes")


def buffers() -> st.SearchStrategy[BufferSpec]:
    # A read-only buffer (bytes) is left out: pinned by
    # test_readinto_a_read_only_buffer_loses_nothing.
    kinds = ["bytearray", "memoryview", "array", "matrix", "ctypes", "strided", "str"]
    return st.builds(
        BufferSpec,
        st.sampled_from([*kinds, "none"]),
        st.one_of(st.integers(0, 64), st.integers(0, 100_000)),
    )


class Blob(bytes):
    """Bytes with a short repr: a failing example prints its length and first bytes."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes: {bytes(self[:24])!r}...>"


def payloads() -> st.SearchStrategy[bytes]:
    piece = st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\n", b"\r\n", b"--", b"\n\n", b"x"]),
        st.builds(
            lambda unit, count: unit * count,
            st.binary(min_size=1, max_size=2),
            st.integers(1, 70_000),
        ),
    )
    joined = st.lists(piece, max_size=8).map(lambda pieces: Blob(b"".join(pieces)))
    return joined.filter(lambda data: len(data) <= 300_000)


class ReadModel:
    """What the peer sent and what is left; checks each read against io's rules.

    A read returns the next bytes in order, never drops or repeats one, and at
    EOF returns b"" every time; readexactly() and readuntil() raise
    IncompleteReadError with every byte left in `.partial`, as in asyncio.
    """

    def __init__(self, sent: bytes) -> None:
        self.sent = sent
        self.left = sent
        self.taken: list[bytes] = []

    def take(self, data: bytes) -> None:
        assert self.left.startswith(data), (data[:40], self.left[:40])
        self.left = self.left[len(data) :]
        self.taken.append(data)

    def check(self, reader: Any, op: tuple[Any, ...]) -> None:
        name, *args = op
        getattr(self, f"_{name}")(reader, *args)

    def _read(self, reader: Any, size: Any) -> None:
        if _bad_size(size):
            _raises(TypeError, reader.read, size)
            return
        want = self.left if size is None or size < 0 else self.left[:size]
        self._expect(reader.read(size), want)

    def _read1(self, reader: Any, size: Any) -> None:
        if _bad_size(size):
            _raises(TypeError, reader.read1, size)
            return
        data = reader.read1(size)
        if size == 0 or not self.left:
            assert data == b""
        else:
            assert data, "read1() returned b'' before EOF"
            assert size < 0 or len(data) <= size
        self.take(data)

    def _readline(self, reader: Any, limit: Any) -> None:
        if _bad_size(limit):
            _raises(TypeError, reader.readline, limit)
            return
        end = self.left.find(b"\n")
        line = self.left if end < 0 else self.left[: end + 1]
        if limit is not None and limit >= 0:
            line = line[:limit]
        self._expect(reader.readline(limit), line)

    def _readexactly(self, reader: Any, n: Any) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            _raises(TypeError, reader.readexactly, n)
        elif n < 0:
            _raises(ValueError, reader.readexactly, n)
        elif n <= len(self.left):
            self._expect(reader.readexactly(n), self.left[:n])
        else:
            error = _raises(IncompleteReadError, reader.readexactly, n)
            assert isinstance(error, IncompleteReadError)
            assert error.partial == self.left and error.expected == n
            self.take(error.partial)

    def _readuntil(self, reader: Any, separator: Any, limit: Any) -> None:
        args = (separator,) if limit is OMITTED else (separator, limit)
        bound = 65536 if limit is OMITTED else limit
        if not isinstance(separator, (bytes, bytearray)):
            _raises(TypeError, reader.readuntil, *args)
            return
        if isinstance(bound, bool) or not isinstance(bound, int):
            _raises(TypeError, reader.readuntil, *args)
            return
        if not separator or bound < len(separator):
            _raises(ValueError, reader.readuntil, *args)
            return
        start = self.left.find(separator)
        if 0 <= start <= bound:
            self._expect(reader.readuntil(*args), self.left[: start + len(separator)])
        elif start > bound or len(self.left) >= bound + len(separator):
            error = _raises(ValueError, reader.readuntil, *args)  # the limit: nothing consumed
            assert not isinstance(error, IncompleteReadError)
        else:
            error = _raises(IncompleteReadError, reader.readuntil, *args)
            assert isinstance(error, IncompleteReadError) and error.partial == self.left
            self.take(error.partial)

    def _readinto(self, reader: Any, spec: BufferSpec, one: bool = False) -> None:
        target = spec.build()
        method = reader.readinto1 if one else reader.readinto
        if not spec.writable:
            _raises(TypeError, method, target)
            return
        nbytes = memoryview(target).nbytes
        count = method(target)
        most = min(nbytes, len(self.left))
        if one:
            assert (count > 0) == (most > 0) and count <= most
        else:
            assert count == most, (count, most)
        self.take(memoryview(target).tobytes()[:count])

    def _readinto1(self, reader: Any, spec: BufferSpec) -> None:
        self._readinto(reader, spec, one=True)

    def _peek(self, reader: Any, size: Any) -> None:
        if not isinstance(size, int):
            _raises(TypeError, reader.peek, size)
            return
        data = reader.peek(size)
        assert self.left.startswith(data) and bool(data) == bool(self.left)

    def _next(self, reader: Any) -> None:
        if not self.left:
            _raises(StopIteration, next, iter(reader))
            return
        end = self.left.find(b"\n")
        self._expect(next(iter(reader)), self.left if end < 0 else self.left[: end + 1])

    def _readlines(self, reader: Any, hint: Any) -> None:
        want: list[bytes] = []
        rest, total = self.left, 0
        while rest:
            end = rest.find(b"\n")
            line = rest if end < 0 else rest[: end + 1]
            want.append(line)
            rest = rest[len(line) :]
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        lines = reader.readlines(hint)
        assert lines == want
        for line in lines:
            self.take(line)

    def _expect(self, data: bytes, want: bytes) -> None:
        assert type(data) is bytes, type(data)
        assert data == want, (len(data), len(want), data[:40], want[:40])
        self.take(data)


def _bad_size(size: Any) -> bool:
    return size is not None and (isinstance(size, bool) or not isinstance(size, int))


def _raises(kind: type[BaseException], call: Callable[..., Any], *args: Any) -> BaseException:
    try:
        result = call(*args)
    except kind as exc:
        return exc
    raise AssertionError(f"{call.__name__}{args!r} returned {result!r:.60}, not {kind.__name__}")
