"""Addresses on the command line of the stack's daemons."""

from __future__ import annotations

import argparse


def hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); an empty host means every address. A malformed
    value raises argparse.ArgumentTypeError, which argparse prints as a usage error naming the option."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    try:
        num = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    if not 0 <= num < 65536:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}")
    return host or "0.0.0.0", num
