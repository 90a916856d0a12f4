"""A Django view streaming a gopher server's answer: the Workers `new Response(socket.readable)`.

Usage: python examples/django_stream.py [GOPHER_HOST:PORT] [--listen HOST:PORT] [--once]

A whole Django project in one file: settings, one view and the URLconf. Like
the Worker of the Cloudflare Workers sockets docs, the view connects to a
gopher server, sends the request's path as the selector, and returns the
socket's readable side as the body: `StreamingHttpResponse(sock.stream())`.
The body streams in chunks of up to 64 KiB as the gopher server sends it, and
Django's `close()` at the end of the response closes the socket (also when the
HTTP client went away first).

Then open http://127.0.0.1:8000/ (the gopher root menu) in a browser, or run
`curl http://127.0.0.1:8000/`. --once serves one request and exits.
"""

from __future__ import annotations

import argparse
import socketserver
import sys
from typing import Any, Final, Optional
from wsgiref.simple_server import WSGIServer, make_server

import django  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
from django.core.handlers.wsgi import WSGIHandler  # type: ignore[import-untyped]
from django.http import HttpResponse, StreamingHttpResponse  # type: ignore[import-untyped]
from django.urls import re_path  # type: ignore[import-untyped]

from pysock import PysockError, connect

# Seconds for the connect and for each read or write: a slow gopher server ends
# the response with an error, never holds a web server's thread forever.
TIMEOUT: Final = 10.0


def gopher(request: Any) -> Any:
    sock = connect(settings.GOPHER_ADDRESS, timeout=TIMEOUT)
    try:
        # The write waits until the connection is open, so it is where a connect error shows.
        sock.writable.write(request.path.encode() + b"\r\n")  # the selector, as in Workers
    except (PysockError, OSError) as exc:  # ConnectError, SocketTimeout...
        sock.close()
        message = f"cannot reach the gopher server: {exc}\n"
        return HttpResponse(message, status=502, content_type="text/plain")
    # stream() owns the socket: Django's response.close() (called by the WSGI server
    # at the end of the response) closes it, and so does the peer's EOF.
    return StreamingHttpResponse(sock.stream(), content_type="text/plain")


urlpatterns = [re_path(r"", gopher)]  # every path: the path is the selector


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request: each streaming response holds one."""

    daemon_threads = True  # Ctrl-C does not wait for the responses still streaming.


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="django_stream.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("address", nargs="?", default="gopher.floodgap.com:70", help="HOST:PORT")
    parser.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT (port 0: any)")
    parser.add_argument("--once", action="store_true", help="serve one request, then exit")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    settings.configure(
        DEBUG=False,
        SECRET_KEY="an example: make your own for a real site",
        ALLOWED_HOSTS=["localhost", "127.0.0.1", "[::1]", host],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        USE_TZ=True,
        GOPHER_ADDRESS=args.address,  # our own setting, read by the view
    )
    django.setup()
    server_class = WSGIServer if args.once else ThreadingWSGIServer
    try:
        server = make_server(host, int(port), WSGIHandler(), server_class=server_class)
    except (OSError, ValueError) as exc:  # the port is taken, a bad --listen...
        print(f"django_stream.py: error: {exc}", file=sys.stderr)
        return 1
    with server:
        address = f"http://{host}:{server.server_port}/"
        print(f"* serving {address} from gopher {args.address}", flush=True)
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
