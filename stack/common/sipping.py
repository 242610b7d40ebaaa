"""The stack's SIP OPTIONS probe: :func:`sipcore.probe.options_ping_async` under the name its callers use.

The agent client's secondary confirmation and the CTI's PBX liveness check call ``sipping.options(host,
port, timeout)``; the probe itself (own socket, retransmission, answer matching) is :mod:`sipcore.probe`.
"""

from __future__ import annotations

from sipcore.probe import options_ping_async as options

__all__ = ["options"]
