"""The TLS record layer (`pysock._records.TlsRecords`) against a stdlib server, in memory.

No socket anywhere: the server is an `ssl.SSLObject` over two `ssl.MemoryBIO`s,
and the test carries the bytes between it and the client by hand, so each test
decides exactly which bytes arrive, in which pieces, and where the stream ends.
"""

from __future__ import annotations

import os
import ssl

import pytest
import trustme

from pysock._records import Handshake, Records, TlsRecords, ragged_eof

from .peers.tls import server_context

HOSTNAME = "localhost"  # The name the conftest's leaf certificate is issued for.
KiB = 1024
DATA = b"the peer's data, " * 100
VERSION_NAMES = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}


class Peer:
    """The server: a stdlib SSL object over memory BIOs."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def send(self, data: bytes) -> bytes:
        """Encrypt `data`: the records, for the test to deliver (or not)."""
        self.sslobj.write(data)
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        try:
            self.sslobj.unwrap()
        except ssl.SSLWantReadError:
            pass  # The client's close_notify is not awaited.
        return self.outgoing.read()

    def receive(self, client: TlsRecords) -> bytes:
        """Take the client's queued records and decrypt them."""
        while client.outq:
            self.incoming.write(client.outq.popleft())
        data = b""
        while True:
            try:
                chunk = self.sslobj.read(64 * KiB)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                return data
            if not chunk:
                return data
            data += chunk

    def ended(self) -> bool:
        """True once the client's close_notify came (b"" or an error, by who else closed)."""
        try:
            return self.sslobj.read(10) == b""
        except ssl.SSLZeroReturnError:
            return True
        except ssl.SSLWantReadError:
            return False


def shake_hands(client: TlsRecords, peer: Peer) -> None:
    server_done = False
    for _ in range(5):  # Bounded: two or three flights each way.
        step, flight = client.handshake()
        peer.incoming.write(flight)
        if not server_done:
            try:
                peer.sslobj.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        answer = peer.outgoing.read()
        if answer:
            client.feed(answer)
        if step is Handshake.DONE and server_done:
            return
    raise AssertionError("the handshake did not complete")


def read_available(client: TlsRecords, size: int = 64 * KiB) -> bytes:
    """Every byte the client can decrypt now, without more ciphertext."""
    data = b""
    buffer = bytearray(size)
    for _ in range(10_000):  # Bounded: a few hundred records at most.
        nbytes = client.decrypt_into(buffer)
        if not nbytes:
            return data
        data += buffer[:nbytes]
    raise AssertionError("reads never stopped")


@pytest.fixture
def peer(server_ctx: ssl.SSLContext) -> Peer:
    return Peer(server_ctx)


@pytest.fixture
def client(client_ctx: ssl.SSLContext, peer: Peer) -> TlsRecords:
    """A client whose handshake with `peer` is done."""
    records = TlsRecords(client_ctx, HOSTNAME)
    shake_hands(records, peer)
    return records


def tls13(leaf: trustme.LeafCert) -> Peer:
    return Peer(server_context(leaf, ssl.TLSVersion.TLSv1_3))


# -- the handshake ---------------------------------------------------------------------


def test_the_handshake_completes_in_memory(
    client_ctx: ssl.SSLContext,
    server_ctx: ssl.SSLContext,
    tls_version: ssl.TLSVersion,
    leaf: trustme.LeafCert,
) -> None:
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server_ctx.set_alpn_protocols(["http/1.1"])
    peer = Peer(server_ctx)
    client = TlsRecords(client_ctx, HOSTNAME)
    step, hello = client.handshake()
    assert step is Handshake.WANT_READ and hello[0] == 22  # A handshake record.
    peer.incoming.write(hello)
    shake_hands(client, peer)
    info = client.describe()
    assert info.version == VERSION_NAMES[tls_version]
    assert info.alpn == "http/1.1" and info.cipher
    assert info.peer_certificate["subjectAltName"][0] == ("DNS", HOSTNAME)
    assert info.peer_certificate_der == ssl.PEM_cert_to_DER_cert(
        leaf.cert_chain_pems[0].bytes().decode()
    )
    assert not client.outq  # The flights were returned, not queued.


def test_a_certificate_for_another_name_fails_the_handshake(
    client_ctx: ssl.SSLContext, peer: Peer
) -> None:
    client = TlsRecords(client_ctx, "elsewhere.example")
    with pytest.raises(ssl.SSLCertVerificationError):
        shake_hands(client, peer)


# -- data both ways --------------------------------------------------------------------


def test_data_both_ways(client: TlsRecords, peer: Peer) -> None:
    big = os.urandom(200 * KiB)  # Thirteen records and more.
    client.encrypt(big)
    client.encrypt(memoryview(b"and a view"))
    assert peer.receive(client) == big + b"and a view"
    client.feed(peer.send(DATA))
    assert read_available(client) == DATA
    assert client.decrypt_into(bytearray(10)) is None  # Nothing more: receive first.


@pytest.mark.parametrize("earlier", [False, True], ids=["decrypted now", "decrypted earlier"])
def test_a_read_takes_at_most_the_buffer(client: TlsRecords, peer: Peer, earlier: bool) -> None:
    client.feed(peer.send(DATA))
    if earlier:
        client.decrypt_all()
    buffer = bytearray(7)
    assert client.decrypt_into(memoryview(buffer)) == 7 and buffer == DATA[:7]
    assert client.decrypt_into(memoryview(buffer)[:3]) == 3 and buffer[:3] == DATA[7:10]
    assert read_available(client) == DATA[10:]


def test_received_ciphertext_is_handed_in_with_the_next_read(
    client: TlsRecords, peer: Peer
) -> None:
    records = peer.send(DATA)
    buffer = bytearray(len(DATA))
    half = len(records) // 2
    # The reader's way: ciphertext goes in under the lock that decrypts it.
    assert client.decrypt_into(buffer, memoryview(records[:half])) is None
    assert client.decrypt_into(buffer, memoryview(records[half:])) == len(DATA)
    assert buffer == DATA


# -- the plaintext queue ---------------------------------------------------------------


def test_plaintext_decrypted_with_no_reader_is_read_first(client: TlsRecords, peer: Peer) -> None:
    client.feed(peer.send(b"first "))
    assert client.decrypt_all() is Records.MORE
    assert client.unread == len(b"first ")
    client.feed(peer.send(b"second"))
    buffer = bytearray(64)
    assert client.decrypt_into(buffer) == 6 and buffer[:6] == b"first "
    assert client.unread == 0
    assert read_available(client) == b"second"


def test_take_plain_moves_only_what_was_decrypted_earlier(client: TlsRecords, peer: Peer) -> None:
    client.feed(peer.send(b"earlier"))
    client.decrypt_all()
    client.feed(peer.send(b"later"))
    buffer = bytearray(4)
    assert client.take_plain(buffer) == 4 and buffer == b"earl"
    assert client.take_plain(buffer) == 3 and buffer[:3] == b"ier"
    assert client.take_plain(buffer) == 0  # "later" is still ciphertext.
    assert read_available(client) == b"later"


# -- the end of the records ------------------------------------------------------------


def test_close_notify_is_a_clean_end(client: TlsRecords, peer: Peer) -> None:
    client.feed(peer.send(DATA) + peer.close_notify())
    assert read_available(client) == DATA
    assert client.decrypt_into(bytearray(10)) == 0
    assert client.decrypt_into(bytearray(10)) == 0  # And stays so,
    client.feed_eof()  # even once the TCP EOF behind it came.
    assert client.decrypt_into(bytearray(10)) == 0
    assert client.decrypt_all(eof=True) is Records.CLOSED
    assert client.failure is None


def test_close_notify_found_with_no_reader_is_a_clean_end(client: TlsRecords, peer: Peer) -> None:
    client.feed(peer.send(DATA) + peer.close_notify())
    assert client.decrypt_all(eof=True) is Records.CLOSED
    assert client.unread == len(DATA)
    assert read_available(client) == DATA
    assert client.decrypt_into(bytearray(10)) == 0


def test_a_tcp_eof_without_close_notify_is_a_failure(client: TlsRecords, peer: Peer) -> None:
    client.feed(peer.send(DATA))
    assert read_available(client) == DATA
    client.feed_eof()
    with pytest.raises(ssl.SSLError) as first:
        client.decrypt_into(bytearray(10))
    assert ragged_eof(first.value)
    with pytest.raises(ssl.SSLError) as again:
        client.decrypt_into(bytearray(10))
    assert again.value is first.value  # The first error is kept.
    assert client.failure is first.value
    assert client.decrypt_all() is Records.FAILED


def test_a_tcp_eof_found_with_no_reader_is_a_failure(client: TlsRecords, peer: Peer) -> None:
    client.feed(peer.send(DATA))
    assert client.decrypt_all(eof=True) is Records.FAILED
    assert client.failure is not None and ragged_eof(client.failure)
    assert client.take_plain(bytearray(len(DATA))) == len(DATA)  # The data before it stays.


def test_ignore_unexpected_eof_takes_the_tcp_eof_as_the_end(
    client_ctx: ssl.SSLContext, peer: Peer
) -> None:
    client = TlsRecords(client_ctx, HOSTNAME, ignore_unexpected_eof=True)
    shake_hands(client, peer)
    client.feed(peer.send(DATA))
    assert read_available(client) == DATA
    client.feed_eof()
    assert client.decrypt_into(bytearray(10)) == 0
    assert client.decrypt_all() is Records.CLOSED and client.failure is None


def test_ignore_unexpected_eof_with_no_reader(client_ctx: ssl.SSLContext, peer: Peer) -> None:
    client = TlsRecords(client_ctx, HOSTNAME, ignore_unexpected_eof=True)
    shake_hands(client, peer)
    client.feed(peer.send(DATA))
    assert client.decrypt_all(eof=True) is Records.CLOSED
    assert read_available(client) == DATA


@pytest.mark.parametrize("reader", [True, False], ids=["reader", "no reader"])
def test_the_contexts_own_flag_does_not_accept_a_truncation(
    client_ctx: ssl.SSLContext, peer: Peer, reader: bool
) -> None:
    """With OP_IGNORE_UNEXPECTED_EOF OpenSSL reports a TCP EOF as a clean end."""
    flag = getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    if not flag:
        pytest.skip("this ssl module has no OP_IGNORE_UNEXPECTED_EOF")
    client_ctx.options |= flag
    client = TlsRecords(client_ctx, HOSTNAME)
    shake_hands(client, peer)
    client.feed(peer.send(DATA))
    if reader:
        assert read_available(client) == DATA
        client.feed_eof()
        with pytest.raises(ssl.SSLEOFError):
            client.decrypt_into(bytearray(10))
    else:
        assert client.decrypt_all(eof=True) is Records.FAILED
        assert isinstance(client.failure, ssl.SSLEOFError)


def test_the_contexts_own_flag_keeps_a_close_notify_clean(
    client_ctx: ssl.SSLContext, peer: Peer
) -> None:
    # The EOF goes in only after the records before it were read: the
    # close_notify among them is seen before OpenSSL could mistake the EOF.
    client_ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    client = TlsRecords(client_ctx, HOSTNAME)
    shake_hands(client, peer)
    client.feed(peer.send(DATA) + peer.close_notify())
    assert client.decrypt_all(eof=True) is Records.CLOSED


def test_a_truncated_record_is_a_failure(client: TlsRecords, peer: Peer) -> None:
    whole = peer.send(b"whole")
    cut = peer.send(b"cut short")
    client.feed(whole + cut[: len(cut) - 3])
    assert read_available(client) == b"whole"
    client.feed_eof()
    with pytest.raises(ssl.SSLError) as info:
        client.decrypt_into(bytearray(10))
    assert ragged_eof(info.value)


def test_a_damaged_record_is_a_failure_and_stays_one(client: TlsRecords, peer: Peer) -> None:
    records = bytearray(peer.send(DATA))
    records[-1] ^= 1  # The authentication tag no longer matches.
    client.feed(bytes(records))
    with pytest.raises(ssl.SSLError) as first:
        client.decrypt_into(bytearray(len(DATA)))
    assert not ragged_eof(first.value)
    client.feed(peer.send(b"more"))  # Whatever follows, the first error is the answer.
    with pytest.raises(ssl.SSLError) as again:
        client.decrypt_into(bytearray(10))
    assert again.value is first.value
    assert client.decrypt_all(eof=True) is Records.FAILED and client.failure is first.value


# -- our close_notify ------------------------------------------------------------------


def test_queued_close_notify_goes_after_the_records_before_it(
    client: TlsRecords, peer: Peer
) -> None:
    client.encrypt(DATA)
    client.queue_close_notify()
    assert len(client.outq) == 2
    assert peer.receive(client) == DATA
    assert peer.ended()


def test_close_notify_is_returned_and_produced_once(client: TlsRecords, peer: Peer) -> None:
    close_notify = client.close_notify()
    assert close_notify and not client.outq
    assert client.close_notify() == b""
    assert not peer.ended()
    peer.incoming.write(close_notify)
    assert peer.ended()


def test_close_notify_keeps_the_records_received_before_it(client: TlsRecords, peer: Peer) -> None:
    # OpenSSL's SSL_shutdown would read and drop them.
    client.feed(peer.send(DATA))
    client.close_notify()
    assert client.unread == len(DATA)
    assert read_available(client) == DATA


def test_tls13_reads_go_on_after_our_close_notify(
    client_ctx: ssl.SSLContext, leaf: trustme.LeafCert
) -> None:
    peer = tls13(leaf)
    client = TlsRecords(client_ctx, HOSTNAME)
    shake_hands(client, peer)
    client.queue_close_notify()
    assert peer.receive(client) == b"" and peer.ended()  # The half-close: the peer may still send.
    client.feed(peer.send(DATA) + peer.close_notify())
    assert read_available(client) == DATA
    assert client.decrypt_into(bytearray(10)) == 0


# -- records produced by a read --------------------------------------------------------


def client_certificate_request(
    client_ctx: ssl.SSLContext, ca: trustme.CA, leaf: trustme.LeafCert
) -> tuple[TlsRecords, Peer]:
    """A TLS 1.3 pair where the server asks for the client's certificate after the handshake."""
    server_ctx = server_context(leaf, ssl.TLSVersion.TLSv1_3)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.post_handshake_auth = True
    ca.issue_cert("client.example").configure_cert(client_ctx)
    client_ctx.post_handshake_auth = True
    peer = Peer(server_ctx)
    client = TlsRecords(client_ctx, HOSTNAME)
    shake_hands(client, peer)
    return client, peer


def test_records_a_read_produces_are_queued(
    client_ctx: ssl.SSLContext, ca: trustme.CA, leaf: trustme.LeafCert
) -> None:
    """A post-handshake CertificateRequest: the read that meets it answers it.

    The same path carries the answer to a TLS 1.3 KeyUpdate, which the ssl
    module cannot make a peer send.
    """
    client, peer = client_certificate_request(client_ctx, ca, leaf)
    assert peer.sslobj.getpeercert() is None
    peer.sslobj.verify_client_post_handshake()
    client.feed(peer.send(DATA))  # The CertificateRequest goes out with the data.
    assert read_available(client) == DATA
    assert client.outq  # Certificate, CertificateVerify, Finished.
    client.encrypt(b"after")
    assert peer.receive(client) == b"after"
    certificate = peer.sslobj.getpeercert()
    assert certificate is not None
    assert certificate["subjectAltName"][0] == ("DNS", "client.example")


def test_records_decrypted_with_no_reader_queue_their_answer(
    client_ctx: ssl.SSLContext, ca: trustme.CA, leaf: trustme.LeafCert
) -> None:
    client, peer = client_certificate_request(client_ctx, ca, leaf)
    peer.sslobj.verify_client_post_handshake()
    client.feed(peer.send(DATA))
    assert client.decrypt_all() is Records.MORE
    assert client.outq and client.unread == len(DATA)
    assert peer.receive(client) == b""
    assert peer.sslobj.getpeercert() is not None


# -- ragged_eof ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "ragged"),
    [
        (ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol"), True),
        (ssl.SSLError(1, "[SSL: BAD_RECORD_MAC] bad record mac"), False),
        (ValueError("no ssl error"), False),
    ],
)
def test_ragged_eof(error: BaseException, ragged: bool) -> None:
    assert ragged_eof(error) is ragged


def test_ragged_eof_by_reason() -> None:
    # Python 3.9 reports a TCP EOF without close_notify as a plain SSLError.
    error = ssl.SSLError(1, "unexpected eof while reading")
    error.reason = "UNEXPECTED_EOF_WHILE_READING"
    assert ragged_eof(error)
