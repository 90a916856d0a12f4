"""A Flask view streaming a gopher server's answer: the Workers `new Response(socket.readable)`.

Usage: python examples/flask_stream.py [GOPHER_HOST:PORT] [--listen HOST:PORT] [--once]

The first example of the Cloudflare Workers sockets docs is a Worker that
connects to a gopher server, sends the request's path as the selector, and
returns `new Response(socket.readable)`. In Flask the view returns
`Response(sock.stream())`: the body streams as the gopher server sends it, in
chunks of up to 64 KiB (binary-safe, not line by line), and the socket is closed
when the answer ends, or when the HTTP client goes away first.

Then open http://127.0.0.1:8000/ (the gopher root menu) in a browser, or run
`curl http://127.0.0.1:8000/`. --once serves one request and exits.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final, Optional

from flask import Flask, Response, current_app, request
from werkzeug.serving import make_server

from pysock import PysockError, connect

# Seconds for the connect and for each read or write: a slow gopher server ends
# the response with an error, never holds a web server's thread forever.
TIMEOUT: Final = 10.0

app = Flask(__name__)


@app.route("/", defaults={"path": ""})
@app.route("/<path:path>")
def gopher(path: str) -> Response:
    sock = connect(current_app.config["GOPHER_ADDRESS"], timeout=TIMEOUT)
    try:
        # The write waits until the connection is open, so it is where a connect error shows.
        sock.writable.write(request.path.encode() + b"\r\n")  # the selector, as in Workers
    except (PysockError, OSError) as exc:  # ConnectError, SocketTimeout...
        sock.close()
        return Response(f"cannot reach the gopher server: {exc}\n", 502, mimetype="text/plain")
    # stream() owns the socket: it is closed when the peer's EOF ends the body and
    # when the server calls close() on the response (at its end, or a client gone).
    return Response(sock.stream(), mimetype="text/plain")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flask_stream.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("address", nargs="?", default="gopher.floodgap.com:70", help="HOST:PORT")
    parser.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT (port 0: any)")
    parser.add_argument("--once", action="store_true", help="serve one request, then exit")
    args = parser.parse_args(argv)
    app.config["GOPHER_ADDRESS"] = args.address
    host, _, port = args.listen.rpartition(":")
    try:
        # Werkzeug's development server (what `flask run` uses); threaded, as each
        # streaming response holds a thread until it ends.
        server = make_server(host, int(port), app, threaded=not args.once)
    except (OSError, ValueError) as exc:  # the port is taken, a bad --listen...
        print(f"flask_stream.py: error: {exc}", file=sys.stderr)
        return 1
    with server:
        print(f"* serving http://{host}:{server.port}/ from gopher {args.address}", flush=True)
        try:
            if args.once:
                server.handle_request()
            else:
                server.serve_forever()
        except KeyboardInterrupt:  # Ctrl-C: the normal way to stop it
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
