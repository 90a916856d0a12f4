"""The soak: random mixed traffic from many threads, reconciled at the end.

Run ``python -m tests.soak [--seconds 600] [--threads 16] [--seed N]``
(``make soak``). Each worker thread loops until the time is up, picking an
operation and a transport at random:

transports
    ``off`` (plain TCP), ``on-1.2`` / ``on-1.3`` (TLS from the first byte,
    trustme CA), ``starttls-1.2`` / ``starttls-1.3`` (plaintext, the line
    ``STARTTLS``, the peer's go-ahead ``GO``, then `Socket.start_tls`, with
    the context given to ``connect()`` or to ``start_tls()``).
operations (the peer's side: `tests.peers.load.Header`)
    ``echo``: chunks written and read back in turn, then ``close()``;
    ``half_close``: writes running ahead of reads, ``writable.close()``, then
    the rest read to EOF (plain and TLS 1.3 only: TLS 1.2 cannot half-close);
    ``duplex``: a writer thread and a reader on one socket;
    ``download``: the peer sends and closes; read to EOF;
    ``close_read`` / ``close_write``: ``close()`` while another thread reads
    (writes): that thread must get `SocketClosedError`, ``closed`` None;
    ``reset_read`` / ``reset_write``: the peer resets mid-transfer: the read
    (write) must raise `BrokenSocketError`, and ``closed`` must fail with it.

Reads use a random method each time (read1, read, readexactly, readinto,
readline). Every byte that comes back is checked with sha256: echoes against
what was sent, downloads (and what arrived before a close or reset) against
the pattern both processes generate (`pattern_chunks`). At the end the
counts are reconciled with the peer's own (operations per kind, bytes echoed
and sent, connections per listener), and the descriptor and thread counts
must be back to the baseline (taken once the peer and the pysock-selector
thread are up). Any unexpected exception, checksum mismatch or count that
does not add up makes the exit status 1. The descriptor count, thread count
and peak RSS (VmHWM) are printed at the start, every 60 s and at the end.

The peer also watches the other side of a close: a download the client closed
mid-way must end the peer's send promptly (a reset, or a FIN it can see). A
send still blocked `STALL_TIMEOUT` seconds later (the client's last window
was zero and no RST came) is a failure too.

The modules: `plan` (what runs, the ledger), `operation` (one connection
through one operation), `run` (the workers, the reconciliation, `main`).
"""
