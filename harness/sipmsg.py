"""The capture decoder's SIP reading, which lives in :mod:`sipcore.scan` (shared with the rest of the lab).

Kept so that tests and benches importing ``harness.sipmsg`` keep working; new code imports
:mod:`sipcore.scan` (and :mod:`sipcore.uri` for ``user_of`` / ``host_of``).
"""

from __future__ import annotations

from sipcore.scan import SIP_PREFIXES, SipHead, looks_like_sip, parse_sip, parse_sip_tuple
from sipcore.uri import host_of as uri_host
from sipcore.uri import user_of as uri_user

__all__ = [
    "SIP_PREFIXES",
    "SipHead",
    "looks_like_sip",
    "parse_sip",
    "parse_sip_tuple",
    "uri_host",
    "uri_user",
]
