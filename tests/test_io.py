"""Reading and writing over plain TCP (docs/api.md: SocketReader, SocketWriter)."""

from __future__ import annotations

import array
import hashlib
import os
import socket
import threading
import time
from typing import Callable, Optional

import pytest

from pysock import (
    BrokenSocketError,
    IncompleteReadError,
    LimitOverrunError,
    PysockError,
    SocketClosedError,
    SocketReader,
    SocketWriter,
    connect,
)

from .helpers import recv_all
from .peers.tcp import Server

TIMEOUT = 10
MiB = 1024 * 1024


@pytest.mark.parametrize("timeout", [None, TIMEOUT])
def test_8_mib_each_way_with_one_reader_and_one_writer_thread(
    echo_server: Server, timeout: float
) -> None:
    payload = os.urandom(8 * MiB)
    received = hashlib.sha256()
    with connect(echo_server.address, timeout=timeout) as sock:
        errors: list[BaseException] = []

        def write() -> None:
            try:
                view = memoryview(payload)
                for start in range(0, len(payload), 100_000):
                    sock.writable.write(view[start : start + 100_000])
                sock.writable.close()
            except BaseException as exc:
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        total = 0
        while chunk := sock.readable.read1(65536):
            received.update(chunk)
            total += len(chunk)
        writer.join(TIMEOUT)
        assert errors == [] and not writer.is_alive()
    assert total == len(payload)
    assert received.digest() == hashlib.sha256(payload).digest()


def test_streams_are_binary_buffered_io(echo_server: Server) -> None:
    import io

    with connect(echo_server.address) as sock:
        assert isinstance(sock.readable, SocketReader)
        assert isinstance(sock.readable, io.BufferedIOBase)
        assert isinstance(sock.writable, SocketWriter)
        assert isinstance(sock.writable, io.BufferedIOBase)
        assert sock.readable.readable() and sock.writable.writable()
        assert not sock.readable.seekable()


def lines_then_eof(data: bytes) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        conn.sendall(data)

    return handler


@pytest.mark.parametrize("timeout", [None, TIMEOUT])
def test_read_methods(serve: Callable[..., Server], timeout: float) -> None:
    server = serve(lines_then_eof(b"one\ntwo\nthree\nfour=4;five\nsix\nseven"))
    with connect(server.address, timeout=timeout) as sock:
        reader = sock.readable
        assert reader.readline() == b"one\n"
        assert reader.readline(2) == b"tw"
        assert reader.readline() == b"o\n"
        assert reader.read(3) == b"thr"
        buf = bytearray(3)
        assert reader.readinto(buf) == 3 and buf == b"ee\n"
        assert reader.readuntil(b"=4;") == b"four=4;"
        assert reader.readexactly(5) == b"five\n"
        assert list(reader) == [b"six\n", b"seven"]
        assert reader.read() == b""


@pytest.mark.parametrize("timeout", [None, TIMEOUT])
def test_eof_returns_empty_bytes_every_time(serve: Callable[..., Server], timeout: float) -> None:
    server = serve(lines_then_eof(b"last words"))
    with connect(server.address, timeout=timeout, allow_half_open=True) as sock:
        assert sock.readable.read() == b"last words"
        for _ in range(3):
            assert sock.readable.read() == b""
            assert sock.readable.read(10) == b""
            assert sock.readable.read1(10) == b""
            assert sock.readable.readline() == b""
            assert sock.readable.readinto(bytearray(4)) == 0
            assert sock.readable.peek() == b""


@pytest.mark.parametrize("timeout", [None, TIMEOUT])
def test_readexactly_and_readuntil_at_eof(serve: Callable[..., Server], timeout: float) -> None:
    server = serve(lines_then_eof(b"abcdef"))
    with connect(server.address, timeout=timeout) as sock:
        with pytest.raises(IncompleteReadError) as info:
            sock.readable.readexactly(10)
        assert info.value.partial == b"abcdef" and info.value.expected == 10
    server2 = serve(lines_then_eof(b"no separator here"))
    with connect(server2.address, timeout=timeout) as sock:
        with pytest.raises(IncompleteReadError) as info:
            sock.readable.readuntil(b"\r\n")
        assert info.value.partial == b"no separator here"


@pytest.mark.parametrize("timeout", [None, TIMEOUT])
def test_readuntil_limit_leaves_the_data(serve: Callable[..., Server], timeout: float) -> None:
    server = serve(lines_then_eof(b"x" * 100 + b"\r\n" + b"tail"))
    with connect(server.address, timeout=timeout) as sock:
        with pytest.raises(LimitOverrunError, match="limit of 50") as info:
            sock.readable.readuntil(b"\r\n", limit=50)
        # A data condition, not a bad argument, so a PysockError (only argument errors
        # are plain TypeError/ValueError: docs/errors.md); a ValueError as asyncio's.
        assert isinstance(info.value, PysockError) and isinstance(info.value, ValueError)
        assert info.value.consumed >= 50
        assert sock.readable.readuntil(b"\r\n", limit=200) == b"x" * 100 + b"\r\n"
        assert sock.readable.read() == b"tail"


def test_readuntil_separator_across_chunks(serve: Callable[..., Server]) -> None:
    def handler(conn: socket.socket) -> None:
        for piece in [b"abc\r", b"\ndef", b"\r", b"\n"]:
            conn.sendall(piece)
            threading.Event().wait(0.02)

    server = serve(handler)
    with connect(server.address) as sock:
        assert sock.readable.readuntil(b"\r\n") == b"abc\r\n"
        assert sock.readable.readuntil(b"\r\n") == b"def\r\n"


def test_read_argument_errors(echo_server: Server) -> None:
    with connect(echo_server.address) as sock:
        with pytest.raises(TypeError):
            sock.readable.readexactly("3")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            sock.readable.readexactly(-1)
        with pytest.raises(TypeError):
            sock.readable.readuntil("\n")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            sock.readable.readuntil(b"")
        with pytest.raises(TypeError):
            sock.readable.read("1")  # type: ignore[arg-type]


def test_write_accepts_any_bytes_like_and_returns_its_length(echo_server: Server) -> None:
    with connect(echo_server.address) as sock:
        numbers = array.array("i", [1, 2, 3])
        assert sock.writable.write(b"ab") == 2
        assert sock.writable.write(bytearray(b"cd")) == 2
        assert sock.writable.write(memoryview(b"xefx")[1:3]) == 2
        assert sock.writable.write(numbers) == numbers.itemsize * 3
        assert sock.writable.write(b"") == 0
        sock.writable.writelines([b"g", b"h"])
        sock.writable.flush()
        expected = b"abcdef" + numbers.tobytes() + b"gh"
        assert sock.readable.readexactly(len(expected)) == expected


def test_write_str_is_a_type_error(echo_server: Server) -> None:
    with connect(echo_server.address) as sock:
        with pytest.raises(TypeError, match="not str"):
            sock.writable.write("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            sock.writable.write(12)  # type: ignore[arg-type]


def test_concurrent_reads_are_never_interleaved(serve: Callable[..., Server]) -> None:
    blocks = [bytes([i]) * 10_000 for i in range(40)]
    server = serve(lines_then_eof(b"".join(blocks)))
    got: list[bytes] = []
    with connect(server.address) as sock:

        def read() -> None:
            while True:
                try:
                    got.append(sock.readable.readexactly(10_000))
                except IncompleteReadError:
                    return

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
    assert sorted(got) == sorted(blocks)


RECORD = 4000  # 3999 copies of one letter, then b"\n": a line and a fixed-size record.


def trickle_records(count: int) -> Callable[[socket.socket], None]:
    """Send `count` records in 700-byte pieces, so each needs several receives."""
    data = b"".join(bytes([65 + i % 26]) * (RECORD - 1) + b"\n" for i in range(count))

    def handler(conn: socket.socket) -> None:
        for start in range(0, len(data), 700):
            conn.sendall(data[start : start + 700])
            time.sleep(0.001)
        conn.shutdown(socket.SHUT_WR)
        recv_all(conn)

    return handler


@pytest.mark.parametrize("timeout", [None, 5.0], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("second", ["readline", "readinto", "iteration", "readuntil"])
def test_mixed_concurrent_reads_each_get_whole_records(
    serve: Callable[..., Server], timeout: Optional[float], second: str
) -> None:
    # readexactly() in one thread, another method in a second one: each call must
    # get whole records, whatever the two interleave (io.BufferedReader's C
    # methods alone lose and reorder bytes here).
    server = serve(trickle_records(40))
    got: list[bytes] = []
    with connect(server.address, timeout=timeout) as sock:

        def exact() -> None:
            try:
                while True:
                    got.append(sock.readable.readexactly(RECORD))
            except IncompleteReadError as exc:
                assert exc.partial == b""

        def other() -> None:
            readable = sock.readable
            if second == "readline":
                while line := readable.readline():
                    got.append(line)
            elif second == "iteration":
                got.extend(readable)
            elif second == "readuntil":
                try:
                    while True:
                        got.append(readable.readuntil(b"\n"))
                except IncompleteReadError as exc:
                    assert exc.partial == b""
            else:
                buffer = bytearray(RECORD)
                while count := readable.readinto(buffer):
                    got.append(bytes(buffer[:count]))

        threads = [threading.Thread(target=exact), threading.Thread(target=other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
    torn = [len(r) for r in got if len(r) != RECORD or r[:-1] != r[:1] * (RECORD - 1)]
    assert torn == [] and len(got) == 40


def test_a_method_kept_from_before_close_raises(serve: Callable[..., Server]) -> None:
    server = serve(lines_then_eof(b"one\ntwo\nthree\n"))
    with connect(server.address) as sock:
        readline, readinto = sock.readable.readline, sock.readable.readinto
        assert readline() == b"one\n"  # The buffer holds the other lines now.
        sock.readable.close()
        with pytest.raises(SocketClosedError):
            readline()
        with pytest.raises(SocketClosedError):
            readinto(bytearray(10))


def test_sizes_by_their_spec_names(serve: Callable[..., Server]) -> None:
    server = serve(lines_then_eof(b"abcdef\nghijkl\nmnop"))
    with connect(server.address, timeout=TIMEOUT) as sock:
        readable = sock.readable
        assert readable.read(n=2) == b"ab"
        assert readable.readline(limit=2) == b"cd"
        first = readable.read1(n=3)  # What one receive brought: all of it, on loopback.
        assert first and b"ef\n".startswith(first)
        assert first + readable.read(3 - len(first)) == b"ef\n"
        buffer = bytearray(3)
        assert readable.readinto(b=buffer) == 3 and buffer == b"ghi"
        assert readable.readline(-1) == b"jkl\n"
        assert readable.read(None) == b"mnop"


def test_concurrent_writes_are_never_interleaved(serve: Callable[..., Server]) -> None:
    received: list[bytes] = []
    server = serve(lambda conn: received.append(recv_all(conn)))
    blocks = [bytes([i]) * 300_000 for i in range(8)]
    with connect(server.address) as sock:
        threads = [threading.Thread(target=sock.writable.write, args=(b,)) for b in blocks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        sock.writable.close()
        sock.closed.result(TIMEOUT)
    server.stop()
    data = received[0]
    pieces = [data[i : i + 300_000] for i in range(0, len(data), 300_000)]
    assert sorted(pieces) == sorted(blocks)


def test_peer_reset_breaks_reads(serve: Callable[..., Server]) -> None:
    def reset(conn: socket.socket) -> None:
        conn.recv(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    server = serve(reset)
    with connect(server.address) as sock:
        sock.writable.write(b"hi")
        error = sock.closed.exception(TIMEOUT)
        assert isinstance(error, BrokenSocketError)
        with pytest.raises(BrokenSocketError):
            sock.readable.read(1)
        with pytest.raises(BrokenSocketError):
            sock.writable.write(b"more")
        assert isinstance(error.__cause__, ConnectionResetError)  # Not itself.


def test_readable_close_stops_reading_but_not_writing(serve: Callable[..., Server]) -> None:
    received: list[bytes] = []
    server = serve(lambda conn: received.append(recv_all(conn)))
    with connect(server.address) as sock:
        sock.readable.close()
        assert sock.readable.closed
        with pytest.raises(SocketClosedError):
            sock.readable.read(1)
        with pytest.raises(SocketClosedError):
            sock.readable.readline()
        sock.writable.write(b"still writing")
        sock.writable.close()
        assert sock.closed.result(TIMEOUT) is None
    server.stop()
    assert received == [b"still writing"]


def test_readable_close_closes_everything_when_nothing_can_write(
    serve: Callable[..., Server],
) -> None:
    received: list[bytes] = []
    server = serve(lambda conn: received.append(recv_all(conn)))
    sock = connect(server.address, timeout=TIMEOUT)
    sock.writable.write(b"request")
    closed, readable = sock.closed, sock.readable
    del sock  # The socket and its writable are gone: nothing can write any more.
    readable.close()
    assert closed.result(TIMEOUT) is None  # No ResourceWarning later: it is closed now.
    server.stop()
    assert received == [b"request"]


def test_readable_close_keeps_a_writable_that_someone_holds(serve: Callable[..., Server]) -> None:
    received: list[bytes] = []
    server = serve(lambda conn: received.append(recv_all(conn)))
    sock = connect(server.address, timeout=TIMEOUT)
    closed, readable, writable = sock.closed, sock.readable, sock.writable
    del sock
    readable.close()
    writable.write(b"still writing")
    assert not closed.done()
    writable.close()  # Both directions done: the connection is over.
    assert closed.result(TIMEOUT) is None
    server.stop()
    assert received == [b"still writing"]


def test_writable_close_half_closes(serve: Callable[..., Server]) -> None:
    def answer_after_eof(conn: socket.socket) -> None:
        request = recv_all(conn)
        conn.sendall(b"got " + request)

    server = serve(answer_after_eof)
    with connect(server.address) as sock:
        sock.writable.write(b"question")
        sock.writable.close()
        assert sock.writable.closed
        with pytest.raises(SocketClosedError):
            sock.writable.write(b"more")
        assert sock.readable.read() == b"got question"
        assert sock.closed.result(TIMEOUT) is None
