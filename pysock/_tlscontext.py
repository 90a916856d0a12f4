"""pysock's default TLS context: secure defaults in one function.

One context per process and ALPN list, created on first use and never
modified after, so that connections share its certificate store and session
cache. A context the user gives is never modified either.
"""

from __future__ import annotations

import ssl
import threading
from typing import Final, Optional, Sequence

__all__ = ["OP_IGNORE_UNEXPECTED_EOF", "default_context"]

# OpenSSL 3's SSL_OP_IGNORE_UNEXPECTED_EOF turns a truncated stream into a clean
# EOF. Python 3.8 and 3.9 set it in every new context; 3.10+ leave it clear. A
# build too old to name it gets OpenSSL 3's value.
OP_IGNORE_UNEXPECTED_EOF: Final = getattr(
    ssl, "OP_IGNORE_UNEXPECTED_EOF", 0x80 if ssl.OPENSSL_VERSION_INFO >= (3,) else 0
)

_contexts: dict[Optional[tuple[str, ...]], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def default_context(alpn_protocols: Optional[Sequence[str]] = None) -> ssl.SSLContext:
    """pysock's secure default context: one per process and ALPN list, never modified after.

    ``ssl.create_default_context()`` (system CAs, hostname check, verification
    required), TLS 1.2 at least, and ``OP_IGNORE_UNEXPECTED_EOF`` cleared so a
    truncated stream is an error, not an EOF.
    """
    key = tuple(alpn_protocols) if alpn_protocols else None
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.check_hostname = True
            context.verify_mode = ssl.CERT_REQUIRED
            context.options &= ~OP_IGNORE_UNEXPECTED_EOF
            if key:
                context.set_alpn_protocols(list(key))
            _contexts[key] = context
        return context
