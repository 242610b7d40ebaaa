"""JSON for the stack's hot paths: orjson when installed (10x faster to encode, 5x to decode than the
standard library, measured on a heartbeat ack), ``json`` otherwise, same output either way (compact).

Why it matters: at 10,000 agents the CTI encodes and decodes 20,000 small messages a second at steady
state and the swarm as many again, plus an event-log line per state change in a failover storm.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None  # type: ignore[assignment]


def _default(obj: Any) -> str:
    return str(obj)


if orjson is not None:
    _OPTS = orjson.OPT_NON_STR_KEYS

    def dumpb(obj: Any, default_str: bool = False) -> bytes:
        """Compact JSON as bytes (``default_str``: anything not JSON becomes ``str(obj)``)."""
        return orjson.dumps(obj, default=_default if default_str else None, option=_OPTS)

    def loads(data: bytes | str) -> Any:
        """Parse JSON; ValueError (orjson.JSONDecodeError is one) when it is not JSON."""
        return orjson.loads(data)

else:  # pragma: no cover

    def dumpb(obj: Any, default_str: bool = False) -> bytes:
        return json.dumps(obj, separators=(",", ":"), default=_default if default_str else None).encode()

    def loads(data: bytes | str) -> Any:
        return json.loads(data)


def dumps(obj: Any) -> str:
    """Compact JSON as str (what aiohttp's ``json_serialize`` wants)."""
    return dumpb(obj).decode()
