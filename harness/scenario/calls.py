"""Test calls: a caller places a call through a PBX to an agent's extension, recorded as ``call.place``."""

from __future__ import annotations

import itertools
import threading
from typing import Any

from harness.drivers.caller import caller_for
from harness.scenario.run import Scenario

__all__ = ["place_call"]

_call_ids = itertools.count(1)
_call_ids_lock = threading.Lock()


def place_call(
    sc: Scenario, caller_host: str, pbx: str, to: str, *, hold: float = 0.5, ring_timeout: float = 8.0,
    sip_port: int = 5062,
) -> Any:  # fmt: skip
    """A test call from ``caller_host`` through ``pbx`` to extension ``to``, recorded as ``call.place``:
    ``ok`` when answered, ``fail`` with the SIP status otherwise (docs/history.md). The CallResult."""
    caller = caller_for(sc.lab, caller_host, pbx, steps=sc.steps)
    with _call_ids_lock:
        call_id = f"c{next(_call_ids)}"
    proc = f"caller:{caller_host}:{sip_port}"
    value = {"call": call_id, "to": to, "via": pbx, "from": caller_host}
    if sc.dry_run:
        return caller.call(to, ring_timeout=ring_timeout, hold=hold, sip_port=sip_port)
    assert sc.history is not None
    sc.history.invoke(proc, "call.place", value)
    try:
        res = caller.call(to, ring_timeout=ring_timeout, hold=hold, sip_port=sip_port)
    except BaseException as e:
        sc.history.info(proc, "call.place", {"call": call_id}, error=f"{type(e).__name__}: {e}")
        raise
    if res.answered:
        site = sc.lab.topology.device(pbx).site
        sc.history.ok(proc, "call.place", {"call": call_id, "site": site, **res.to_dict()})
    else:
        why = f"{res.status or ''} {res.reason or res.outcome}".strip()
        sc.history.fail(proc, "call.place", {"call": call_id, **res.to_dict()}, error=why or res.outcome)
    return res
