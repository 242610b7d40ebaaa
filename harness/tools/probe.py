"""An attacker's one-shot probes from a lab host: raw lines on one connection, and a JSON-RPC knock.

Why a process: the probe must speak from inside the attacker's host (its network namespace, its address),
as software on an agent's desktop would, so a scenario runs this module there with ``nsenter`` (see
harness/faults/flood.py for the flood, which lasts; a probe does not change the lab and ends by itself).
It imports nothing of the harness. Input: a JSON list of probes on stdin; output: one JSON list of
results on stdout, in the same order.

- ``{"op": "exchange", "host", "port", "lines": [text, ...]}``: send the lines on one TCP connection and
  read until it goes quiet or closes: ``{"replies": [object or text, ...], "closed": bool}``;
- ``{"op": "rpc", "host", "port", "method"}``: POST a JSON-RPC request to ``/RPC``: ``{"outcome":
  "answered", "status": 200, "body": ...}`` or ``{"outcome": "refused" | "timeout" | "unreachable"}``;
- ``{"op": "http", "host", "port", "request"}``: one raw HTTP request, its bytes as given (a replay).
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

__all__ = ["exchange", "http", "main", "rpc", "run"]

TIMEOUT = 2.0


def _lines(buf: bytes) -> list[Any]:
    out: list[Any] = []
    for raw in buf.split(b"\n"):
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append(raw[:200].decode(errors="replace"))
    return out


def exchange(host: str, port: int, lines: list[str], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send ``lines`` on one connection; what came back, and whether the server closed it."""
    buf, closed = b"", False
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        for line in lines:
            s.sendall(line.encode() + (b"" if line.endswith("\n") else b"\n"))
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                closed = True
                break
            buf += chunk
            if buf.count(b"\n") >= len(lines):  # one answer per line: no need to wait for the quiet
                break
        local = s.getsockname()[1]
    return {"replies": _lines(buf), "closed": closed, "local_port": local}


def rpc(host: str, port: int, method: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """A JSON-RPC request over HTTP, as a curl from the desktop would send it."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "id": 1})
    req = (
        f"POST /RPC HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    )
    return http(host, port, req, timeout)


def http(host: str, port: int, request: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one raw HTTP request (the same bytes each time: a replay is exactly that) and read the
    answer: ``{"outcome": "answered", "status", "body"}``, or refused / timeout / unreachable."""
    buf = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(request.encode())
            while len(buf) < 65536 and not _whole(buf):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except ConnectionRefusedError:
        return {"outcome": "refused"}
    except TimeoutError:
        if not buf:  # nothing came back: no answer (a silent drop, or a server that never replied)
            return {"outcome": "timeout"}
    except OSError as e:
        return {"outcome": "unreachable", "error": str(e)[:200]}
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    try:
        answer: Any = json.loads(rest)
    except ValueError:
        answer = rest[:200].decode(errors="replace")
    return {"outcome": "answered", "status": status, "body": answer}


def _whole(buf: bytes) -> bool:
    """An HTTP response whose body (by Content-Length) has all arrived."""
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(rest) >= int(value.strip())
    return False


def run(probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each probe's result; a probe that fails to connect says so instead of stopping the others."""
    out = []
    for p in probes:
        try:
            if p["op"] == "exchange":
                out.append(exchange(p["host"], int(p["port"]), list(p["lines"])))
            elif p["op"] == "http":
                out.append(http(p["host"], int(p["port"]), str(p["request"])))
            elif p["op"] == "rpc":
                out.append(rpc(p["host"], int(p["port"]), str(p.get("method", "core.version"))))
            else:
                out.append({"error": f"unknown op {p['op']!r}"})
        except OSError as e:
            out.append({"error": f"{type(e).__name__}: {e}"[:200]})
    return out


def main() -> int:
    sys.stdout.write(json.dumps(run(json.load(sys.stdin))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
