"""Address arguments shared by the stack's command lines."""

from __future__ import annotations


def hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); an empty host means every address."""
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)
