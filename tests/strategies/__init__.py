"""Hypothesis strategies and reference models for the property tests (tests/test_properties.py),
one module per model: `addresses`, `options`, `reads`, `writes`.

The models restate pysock's argument checks (docs/api.md, "connect()" and
"SocketOptions") and its read semantics (io's, plus readexactly() and
readuntil() as in asyncio) in their own code, so that a bug in pysock's
checks shows up as a disagreement: a `Verdict` lists the argument errors
allowed for an input (when several checks fail, pysock reports whichever it
meets first, so any of them may be), and `ReadModel` says what each read
must return from the bytes the peer sent. Where the model and pysock
disagree, either one may be wrong: read pysock/_address.py and
pysock/_options.py before widening or narrowing the model.

Two rules keep every example on loopback: a hostname that is valid but not
one of `SAFE_HOSTS` (it would go to DNS) is filtered out, and a valid port
is only ever the port of one of the test's own peers. A few inputs are
excluded here because they exposed pysock bugs that a regression test now
pins down; each exclusion names its test (widening them again is open work).
"""

from __future__ import annotations

from .addresses import (
    SAFE_HOSTS,
    Verdict,
    address_verdict,
    addresses,
    host_errors,
    invalid_hosts,
    invalid_ports,
    port_errors,
    valid_addresses,
)
from .options import (
    BEYOND_KEYS,
    CAMEL_KEYS,
    HUGE_TIMEOUTS,
    KEYS,
    OMITTED,
    SERVER_NAMES,
    SHORT_TIMEOUT,
    alpn_lists,
    connect_verdict,
    junk,
    option_arguments,
    option_values,
    options_verdict,
    server_names,
    ssl_rejects_name,
    timeouts,
    tls_verdict,
    valid_option_arguments,
    valid_server_names,
    valid_timeouts,
)
from .reads import Blob, BufferSpec, ReadModel, buffers, payloads, read_ops
from .writes import WriteArg, write_args

__all__ = [
    "BEYOND_KEYS",
    "CAMEL_KEYS",
    "HUGE_TIMEOUTS",
    "KEYS",
    "OMITTED",
    "SAFE_HOSTS",
    "SERVER_NAMES",
    "SHORT_TIMEOUT",
    "Blob",
    "BufferSpec",
    "ReadModel",
    "Verdict",
    "WriteArg",
    "address_verdict",
    "addresses",
    "alpn_lists",
    "buffers",
    "connect_verdict",
    "host_errors",
    "invalid_hosts",
    "invalid_ports",
    "junk",
    "option_arguments",
    "option_values",
    "options_verdict",
    "payloads",
    "port_errors",
    "read_ops",
    "server_names",
    "ssl_rejects_name",
    "timeouts",
    "tls_verdict",
    "valid_addresses",
    "valid_option_arguments",
    "valid_server_names",
    "valid_timeouts",
    "write_args",
]
