"""A loopback HTTP file server standing in for openslr.org: tests, the demo, offline runs.

Serves one directory on 127.0.0.1 with byte-range support (206, 416, Accept-Ranges), so the
downloader's resume path is exercised for real. Fault injection for tests: answer an error status to
the first N requests for a path, cut a body off after K bytes, or ignore Range headers; and a
throttle (bytes per second per response) to stand in for a slow link. Every request is recorded as
(method, path, Range header, status).

    with Mirror(root) as m:
        m.fail("/dev-clean.tar.gz", times=2)     # two 503s, then the file
        requests.get(m.url + "/dev-clean.tar.gz")
        m.requests                              # [Request("GET", "/dev-clean.tar.gz", None, 503), ...]

CLI: `python -m synthetic.mirror --root DIR [--port N] [--port-file F] [--throttle BYTES_PER_S]` prints
its URL and serves until SIGTERM or SIGINT.
"""

import argparse
import http.server
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import exit_status
from data.files import write_atomically

CHUNK = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None  # the Range header as sent, None if absent
    status: int


def _key(path: str) -> str:
    """Fault-table key of a URL path: always with one leading slash."""
    return "/" + path.lstrip("/")


class _Faults:
    """Thread-safe fault table and request log shared by all handler threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.errors: dict[str, list] = {}  # path -> [requests to let pass first, remaining, status]
        self.cuts: dict[str, list] = {}  # path -> [0, remaining, after_bytes]
        self.ignore_range = False
        self.throttle: float | None = None  # bytes per second of each response body; None: as fast as it goes
        self.log: list[Request] = []

    def take(self, table: dict, path: str):
        """The fault's value if one is pending for path (consuming one use), else None."""
        with self.lock:
            entry = table.get(path)
            if not entry:
                return None
            if entry[0] > 0:
                entry[0] -= 1
                return None
            if entry[1] <= 0:
                return None
            entry[1] -= 1
            return entry[2]

    def record(self, request: Request) -> None:
        with self.lock:
            self.log.append(request)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(first, last) inclusive byte positions asked for, None to serve the whole file, or
    "unsatisfiable". Multi-range and malformed headers are ignored (RFC 9110 allows it)."""
    match = _RANGE.match(header.strip()) if header else None
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix range: the last N bytes
        if int(last) == 0:
            return "unsatisfiable"
        return max(0, size - int(last)), size - 1
    first = int(first)
    last = size - 1 if last == "" else min(int(last), size - 1)
    if first >= size:
        return "unsatisfiable"
    if last < first:
        return None
    return first, last


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DataMirror/1"
    # Set on the subclass each Mirror makes.
    root: Path = Path(".")
    faults: _Faults = _Faults()
    verbose = False

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        if self.verbose:
            super().log_message(format, *args)

    def _finish(self, status: int, headers: dict, path: str) -> None:
        # Record first: once the headers are out, the client may already be asking for the log.
        self.faults.record(Request(self.command, path, self.headers.get("Range"), status))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.end_headers()

    def _error(self, status: int, path: str, extra: dict | None = None) -> None:
        body = f"{status} {self.responses.get(status, ('',))[0]}\n".encode()
        self._finish(status, {"Content-Type": "text/plain", "Content-Length": len(body)} | (extra or {}), path)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _resolve(self, path: str) -> Path | None:
        """The served file for a URL path, or None if it is missing or outside the root."""
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") or "\\" in p for p in parts):
            return None
        target = self.root.joinpath(*parts) if parts else self.root
        return target if target.is_file() else None

    def _serve(self, body: bool) -> None:
        path = _key(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))
        status = self.faults.take(self.faults.errors, path)
        if status is not None:
            return self._error(status, path, {"Retry-After": 0} if status == 503 else None)
        target = self._resolve(path)
        if target is None:
            return self._error(404, path)
        size = target.stat().st_size
        asked = None if self.faults.ignore_range else parse_range(self.headers.get("Range"), size)
        if asked == "unsatisfiable":
            return self._error(416, path, {"Content-Range": f"bytes */{size}"})
        first, last = asked if asked else (0, size - 1)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Content-Length": last - first + 1,
        }
        if asked:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        self._finish(206 if asked else 200, headers, path)
        if body:
            self._send_body(target, first, last - first + 1, self.faults.take(self.faults.cuts, path))

    def _send_body(self, target: Path, offset: int, length: int, cut_after: int | None) -> None:
        """Copy length bytes from offset; with cut_after, stop there and drop the connection."""
        limit = length if cut_after is None else min(length, cut_after)
        rate = self.faults.throttle
        # Throttled: chunks of a tenth of a second's worth, each sent when the rate allows it.
        chunk_size = CHUNK if rate is None else max(1, min(CHUNK, int(rate / 10)))
        start, sent = time.monotonic(), 0
        with open(target, "rb") as f:
            f.seek(offset)
            while limit > 0:
                chunk = f.read(min(chunk_size, limit))
                if not chunk:
                    break
                if rate is not None:
                    time.sleep(max(0.0, start + sent / rate - time.monotonic()))
                self.wfile.write(chunk)
                sent += len(chunk)
                limit -= len(chunk)
        if cut_after is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client hanging up mid-body (as resume tests do) is routine, not worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class Mirror:
    """Serve `root` over HTTP on host:port (0 = any free port) from a background thread."""

    def __init__(
        self, root, host: str = "127.0.0.1", port: int = 0, verbose: bool = False, throttle: float | None = None
    ):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"mirror root {self.root} is not a directory")
        self._faults = _Faults()
        self.throttle(throttle)
        handler = type("Handler", (_Handler,), {"root": self.root, "faults": self._faults, "verbose": verbose})
        self._server = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host}:{self.port}"

    @property
    def requests(self) -> list[Request]:
        """Every request served so far, in order."""
        with self._faults.lock:
            return list(self._faults.log)

    def clear_requests(self) -> None:
        with self._faults.lock:
            self._faults.log.clear()

    def fail(self, path: str, times: int, status: int = 503, after: int = 0) -> None:
        """Answer `status` to `times` requests for path, once `after` more have been served."""
        with self._faults.lock:
            self._faults.errors[_key(path)] = [after, times, status]

    def cut(self, path: str, after: int, times: int = 1) -> None:
        """Drop the connection after `after` body bytes, for the next `times` GETs of path."""
        with self._faults.lock:
            self._faults.cuts[_key(path)] = [0, times, after]

    def ignore_range(self, ignore: bool = True) -> None:
        """Answer every request with 200 and the whole file, as servers without Range do."""
        self._faults.ignore_range = ignore

    def throttle(self, bytes_per_s: float | None) -> None:
        """Send each response body at about `bytes_per_s` (None: unthrottled), as a slow link would."""
        if bytes_per_s is not None and not bytes_per_s > 0:
            raise ValueError(f"throttle {bytes_per_s!r}: must be a positive number of bytes per second")
        self._faults.throttle = bytes_per_s

    def start(self) -> "Mirror":
        # A short poll interval keeps stop() (and so every test using a Mirror) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="mirror", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until shutdown() or an exception (a signal)."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def __enter__(self) -> "Mirror":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class MirrorError(exit_status.Failure):
    """The mirror cannot serve what it was asked to; the message names the root and address."""


def _raise_exit(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synthetic.mirror",
        description="Serve a directory over HTTP (with byte ranges) on the loopback interface, "
        "as a local stand-in for the LibriSpeech mirror. Runs until SIGTERM or SIGINT.",
    )
    parser.add_argument("--root", required=True, help="directory to serve (e.g. the one holding <subset>.tar.gz)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--port-file", help="write the bound port number to this file once serving")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--throttle", type=float, metavar="BYTES_PER_S", help="send each response at this rate (default: unthrottled)"
    )
    args = parser.parse_args(argv)
    if args.throttle is not None and not args.throttle > 0:
        parser.error(f"--throttle {args.throttle}: must be a positive number of bytes per second")
    return exit_status.run(lambda: _serve(args))


def _serve(args: argparse.Namespace) -> None:
    try:
        mirror = Mirror(args.root, args.host, args.port, verbose=args.verbose, throttle=args.throttle)
    except OSError as err:  # no such root, a port in use: named with what was asked
        raise MirrorError(f"cannot serve --root {args.root} on {args.host}:{args.port}: {err}") from None
    signal.signal(signal.SIGTERM, _raise_exit)
    if args.port_file:
        write_atomically(Path(args.port_file), f"{mirror.port}\n")
    print(mirror.url, flush=True)
    try:
        mirror.serve_forever()
    except KeyboardInterrupt:
        pass
    except SystemExit:
        pass
    finally:
        if args.port_file:
            Path(args.port_file).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
