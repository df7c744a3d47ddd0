"""How much of an oversized upload the serving graph takes in before it answers 413.

Starts the graph with tiny stand-in models (an API key set), then sends by hand, on raw
sockets: a request declaring a 3 GB ``Content-Length`` with no body (refused from the header,
before any byte is read), and chunked bodies of 64 and 512 MiB, sent as fast as loopback allows
until the answer arrives. Prints, per body, how much was sent before the answer and the resident
memory of the ingress replica and of Serve's proxy before and after.

Run: ``python scripts/serve_upload_probe.py`` (about a minute; Linux, reads RSS from /proc).
"""

from __future__ import annotations

import http.client
import select
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the serving tests' tiny graph

from tiny_serve import replica_pids, rss_mib, running_graph, tiny_serve_config  # noqa: E402

KEY = "probe-key-0123456789abcdef"
CHUNK = 256 * 1024


def _proxy_pid() -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::ProxyActor"):
                    return int(proc.name)
            except OSError:
                continue
    raise RuntimeError("no Serve proxy process found")


def _head(host: str, framing: str) -> bytes:
    return (
        f"POST /v1/signers?name=big HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: image/png\r\n{framing}\r\n\r\n"
    ).encode()


def _answer(sock: socket.socket) -> int:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_graph(*tiny_serve_config(Path(tmp), api_keys=[KEY])) as url,
    ):
        host, port = url.removeprefix("http://").split(":")
        ingress, proxy = replica_pids("SignAPI")[0], _proxy_pid()
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            start = time.monotonic()
            sock.sendall(_head(host, "Content-Length: 3000000000"))
            status = _answer(sock)
            print(f"declared 3 GB, no body sent: {status} in {time.monotonic() - start:.2f} s")
        frame = f"{CHUNK:x}\r\n".encode() + b"0" * CHUNK + b"\r\n"
        for total_mib in (64, 512):
            before = rss_mib(ingress), rss_mib(proxy)
            sent, start = 0, time.monotonic()
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(_head(host, "Transfer-Encoding: chunked"))
                try:
                    while sent < total_mib * 2**20 and not select.select([sock], [], [], 0)[0]:
                        sock.sendall(frame)
                        sent += CHUNK
                    answer = str(_answer(sock))
                except OSError as e:  # closed by the server while we were sending
                    answer = type(e).__name__
            elapsed = time.monotonic() - start
            time.sleep(2)
            after = rss_mib(ingress), rss_mib(proxy)
            print(
                f"chunked {total_mib} MiB: {sent / 2**20:.1f} MiB sent before the answer "
                f"({answer}, {elapsed:.2f} s); RSS ingress {before[0]:.0f} -> {after[0]:.0f} MiB, "
                f"proxy {before[1]:.0f} -> {after[1]:.0f} MiB"
            )


if __name__ == "__main__":
    main()
