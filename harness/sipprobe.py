"""The harness's names for the shared SIP client and OPTIONS probe, which live in :mod:`sipcore`.

Kept so that tests and benches importing ``harness.sipprobe`` keep working; new code imports
:mod:`sipcore.client`, :mod:`sipcore.probe`, :mod:`sipcore.digest` and :mod:`sipcore.message` directly.
The command line is ``python -m sipcore``.
"""

from __future__ import annotations

from sipcore.client import Dialog, SipUdpClient, register
from sipcore.digest import authorization as digest_authorization
from sipcore.digest import parse_challenge
from sipcore.message import SipMessage, parse
from sipcore.probe import options, options_ping

__all__ = [
    "Dialog",
    "SipMessage",
    "SipUdpClient",
    "digest_authorization",
    "options",
    "options_ping",
    "parse_challenge",
    "parse_message",
    "register",
]


def parse_message(data: bytes) -> SipMessage:
    """:func:`sipcore.message.parse` for a datagram that must be SIP: ValueError if it is not."""
    msg = parse(data)
    if msg is None:
        raise ValueError(f"not a SIP message: {data[:60]!r}")
    return msg
