"""Send PING to a Redis server and print its answer.

Usage: python examples/redis_ping.py [HOST:PORT]

Redis speaks RESP: a command is an array of bulk strings, and the simplest
reply is a status line such as "+PONG\r\n" ("-ERR ..." for an error).
"""

from __future__ import annotations

import argparse
import sys
from typing import Final, Optional

from pysock import PysockError, connect

# Seconds for the connect and for each read or write.
TIMEOUT: Final = 10.0
# The longest reply line we accept: a status reply is short, and a bound keeps a
# server that never sends a newline from filling our memory.
MAX_LINE: Final = 4096


def resp_command(*words: str) -> bytes:
    """Encode a command as a RESP array of bulk strings: *N, then $len and the bytes."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="redis_ping.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("address", nargs="?", default="127.0.0.1:6379", help="HOST:PORT")
    args = parser.parse_args(argv)
    try:
        with connect(args.address, timeout=TIMEOUT) as sock:
            sock.writable.write(resp_command("PING"))
            reply = sock.readable.readline(MAX_LINE)
    except (PysockError, OSError) as exc:
        print(f"redis_ping.py: error: {exc}", file=sys.stderr)
        return 1
    text = reply.decode("utf-8", errors="replace").rstrip("\r\n")
    if not text.startswith("+"):  # "-ERR ...", or the server closed without answering
        print(f"redis_ping.py: error: unexpected reply {text!r}", file=sys.stderr)
        return 1
    print(text)  # +PONG
    return 0


if __name__ == "__main__":
    sys.exit(main())
