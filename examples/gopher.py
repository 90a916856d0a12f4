"""Fetch a gopher menu: the first example of the Cloudflare Workers sockets docs.

Usage: python examples/gopher.py [HOST:PORT] [SELECTOR]

Gopher (RFC 1436) is the simplest protocol there is: send a selector and a
CRLF, and the server answers and closes the connection.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final, Optional

from pysock import PysockError, connect

# Seconds for the connect and for each read or write: a slow server is an
# error, never a hang.
TIMEOUT: Final = 10.0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gopher.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("address", nargs="?", default="gopher.floodgap.com:70", help="HOST:PORT")
    parser.add_argument("selector", nargs="?", default="/", help="what to fetch (default /)")
    args = parser.parse_args(argv)
    try:
        # connect() returns at once; the write below waits until the connection is open.
        with connect(args.address, timeout=TIMEOUT) as sock:
            sock.writable.write(args.selector.encode() + b"\r\n")
            answer = sock.readable.read()  # read() with no size reads up to the server's EOF
    except (PysockError, OSError) as exc:  # ConnectError, SocketTimeout, BrokenSocketError...
        print(f"gopher.py: error: {exc}", file=sys.stderr)
        return 1
    print(answer.decode("utf-8", errors="replace"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
