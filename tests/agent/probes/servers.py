"""Real servers for the probe tests: HTTP(S), a TCP listener and dnsmasq.

Each can run in the test process on 127.0.0.1 port 0, or inside a test namespace as
``python3 -m tests.agent.probes.servers http --bind 10.24.0.80 --port 443 --cert F --key F``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.netns import wait_for


class Handler(http.server.BaseHTTPRequestHandler):
    """``/`` 200, ``/status/N`` N, ``/redirect`` 302, ``/bytes/N`` N bytes, ``/hang`` never."""

    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path
        if path == "/":
            self._send(200, b"ok\n")
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"status\n")
        elif path == "/redirect":
            self._send(302, headers={"Location": "/"})
        elif path.startswith("/bytes/"):
            size = int(path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            left = size
            with contextlib.suppress(OSError):
                while left > 0:
                    n = min(left, len(chunk))
                    self.wfile.write(chunk[:n])
                    left -= n
        elif path == "/hang":
            self.server.stopping.wait(60)
        else:
            self._send(404, b"not found\n")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, bind: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.stopping = threading.Event()
        super().__init__((bind, port), Handler)
        if tls is not None:
            # The handshake happens in the handler thread, so a client that rejects the
            # certificate cannot stall the accept loop.
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up (wrong CA, timeouts) are what the tests provoke

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


@contextlib.contextmanager
def http_server(bind: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    """An HTTP(S) server on ``bind`` port 0, served from a thread for the block's duration."""
    server = Server(bind, 0, tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def tcp_listener(
    bind: str = "127.0.0.1", banner: bytes = b""
) -> Iterator[tuple[socket.socket, list[float]]]:
    """A listening socket that accepts (and records the time of) every connection,
    sends ``banner`` and closes it."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((bind, 0))
    sock.listen(128)
    accepted: list[float] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(time.monotonic())
            if banner:
                # Send, half-close, then take the client's request so closing sends no RST.
                with contextlib.suppress(OSError):
                    conn.sendall(banner)
                    conn.shutdown(socket.SHUT_WR)
                    conn.settimeout(1)
                    conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock, accepted
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def free_port(bind: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``bind`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((bind, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((bind, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def dnsmasq_args(listen: str, port: int, *records: str) -> list[str]:
    """dnsmasq answering only from its command line: no upstream, no /etc/hosts."""
    return [
        "dnsmasq",
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
        f"--port={port}",
        f"--listen-address={listen}",
        "--bind-interfaces",
        "--local=/gov.vn/",  # unknown names under gov.vn are NXDOMAIN, not forwarded
        *records,
    ]


DEFAULT_RECORDS = (
    "--address=/dichvucong.gov.vn/10.22.0.80",
    "--txt-record=dichvucong.gov.vn,hatang-test",
)


def dns_ready(server: str, port: int, name: str = "dichvucong.gov.vn") -> bool:
    import dns.exception
    import dns.message
    import dns.query

    try:
        dns.query.udp(dns.message.make_query(name, "A"), server, timeout=0.2, port=port)
    except (dns.exception.DNSException, OSError):
        return False
    return True


@contextlib.contextmanager
def dnsmasq(*records: str) -> Iterator[int]:
    """A real dnsmasq on 127.0.0.1 and a free port; yields the port."""
    if shutil.which("dnsmasq") is None:
        import pytest

        pytest.skip("dnsmasq is not installed (Debian package dnsmasq-base)")
    port = free_port()
    proc = subprocess.Popen(
        dnsmasq_args("127.0.0.1", port, *(records or DEFAULT_RECORDS)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: proc.poll() is not None or dns_ready("127.0.0.1", port), timeout=20)
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"dnsmasq exited: {err}")
        yield port
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> None:
    """Serve in the foreground (used inside test namespaces)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["http", "tcp"])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    if args.kind == "http":
        tls = tls_context(args.cert, args.key) if args.cert else None
        Server(args.bind, args.port, tls).serve_forever(poll_interval=0.1)
    else:
        family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.bind, args.port))
        sock.listen(128)
        while True:
            conn, _ = sock.accept()
            conn.close()


def write_pem(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return str(path)


if __name__ == "__main__":
    main()
