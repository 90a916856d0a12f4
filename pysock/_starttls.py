"""`start_tls()`: taking a plaintext connection over for TLS, and the checks before it.

The dangerous moment of STARTTLS is the switch: any byte the server (or a
man in the middle) sent after its go-ahead and before the handshake would be
read as if it came through TLS. That is CVE-2011-0411, found in Postfix and
many other servers. pysock refuses the upgrade when such bytes wait in its
own buffer or in the kernel, and closes the connection; bytes that arrive
after the check go into the handshake and make it fail.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from typing import Final, Optional

from ._connection import Connection
from ._options import Options
from ._platform import CAN_BLOCK, MSG_DONTWAIT
from ._state import RegistrationEvent, State
from ._tls import TlsConnection
from .errors import StartTlsError

__all__ = ["start_tls"]


def start_tls(
    old: Connection,
    unread: bytes,
    context: Optional[ssl.SSLContext],
    hostname: Optional[str],
    alpn: Optional[tuple[str, ...]],
) -> TlsConnection:
    """Take `old`'s TCP connection over and begin a TLS handshake on it.

    Raises:
        StartTlsError: the socket is not open, another thread is using it, or
            plaintext is waiting unread (then the connection is closed).
    """
    if old.state is State.CONNECTING:
        try:
            old.wait_opened(old.call_deadline(), "start_tls()")
        except Exception as exc:
            raise StartTlsError(f"start_tls(): the connection did not open: {exc}") from exc
    _check_upgradable(old, unread)
    options = _upgraded_options(old.options, context, hostname, alpn)
    new = TlsConnection(old.endpoint, options)  # Before the take-over: it may refuse the name.
    # The timeout as it is now (Socket.timeout may have changed it since connect()).
    new.timeout = old.timeout
    new._blocking = old.timeout is None and CAN_BLOCK
    try:
        sock = old.take_over()
    except StartTlsError:
        new.close()  # Never started: closed, so that its finalizer has nothing to warn of.
        raise
    # Still in the idle watch's selector, maybe, until the loop thread drops it
    # there: the descriptor closes on that thread, after the drop.
    if old.in_selector:
        new._watched(RegistrationEvent.ENTER_SELECTOR)
    new.schedule_connect_deadline()  # From now: connect_timeout bounds the handshake.
    sock.setblocking(False)
    new.begin_handshake(sock)
    return new


def _check_upgradable(old: Connection, unread: bytes) -> None:
    refusal = old.upgrade_refusal()
    if refusal is not None:
        raise StartTlsError(refusal)
    assert old.sock is not None  # OPEN: the socket is there until take_over().
    if old._reading or old._writing:
        raise StartTlsError("start_tls(): another thread is reading or writing this socket")
    waiting = unread or _kernel_unread(old.sock)
    if waiting:
        old.close()
        shown = repr(waiting[:_SHOWN])[1:] + ("..." if len(waiting) > _SHOWN else "")
        raise StartTlsError(
            f"start_tls(): plaintext from {old.endpoint} is waiting unread: {shown}. "
            "Either it is the server's reply, not read yet (read the answer to your "
            "STARTTLS command, then call start_tls()), or it was injected after the "
            "server's go-ahead (CVE-2011-0411). The connection was closed"
        )


# How many unread bytes the refusal shows (escaped): enough to recognise a reply.
_SHOWN: Final = 60


def _kernel_unread(sock: socket.socket) -> bytes:
    try:
        return sock.recv(_SHOWN + 1, socket.MSG_PEEK | MSG_DONTWAIT)
    except BlockingIOError:
        return b""
    except OSError:
        return b""  # A reset: the handshake will report it.


def _upgraded_options(
    options: Options,
    context: Optional[ssl.SSLContext],
    hostname: Optional[str],
    alpn: Optional[tuple[str, ...]],
) -> Options:
    if context is None and alpn is not None and options.tls_context is not None:
        raise ValueError(
            "alpn_protocols cannot be combined with the tls_context given to connect(): "
            "pysock never modifies a context it was given"
        )
    if context is not None:
        alpn_protocols = alpn
    else:
        context = options.tls_context
        alpn_protocols = alpn if alpn is not None else options.alpn_protocols
    return dataclasses.replace(
        options,
        secure_transport="on",
        tls_context=context,
        expected_server_hostname=hostname or options.expected_server_hostname,
        alpn_protocols=alpn_protocols,
    )
