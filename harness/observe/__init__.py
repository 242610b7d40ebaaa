"""Observation of the system under test from outside: what the PBXs, the CTIs and the wire show.

Recovery is judged from this evidence, never from what the stack says of itself (DESIGN.md). Every reader
here speaks a device's own management protocol, so it works against a contact center that is not ours:

- `readers`: a PBX's registrations (Kamailio JSON-RPC ``ul.dump``), a CTI's sessions (``sessions`` query);
- `endpoints`, `observer`, `view`: every PBX and CTI of a lab polled into the history, the latest view kept
  for the scenario's waits;
- `lab_state`: the roster, and links and processes (``lab_snapshot``) from the lab backend;
- `points`, `lab_capture`, `wire`: tcpdump where a physical lab captures (SPAN ports), its packets decoded
  into ``sip`` / ``cti`` observations;
- `cti_client`: speaking to a CTI as a misbehaving client (forged tokens, garbage).

Everything lands in a :class:`harness.history.History` with the schema of docs/history.md, so the checkers
(harness/checks/) can judge it, now or later. Usable from a plain script::

    with History(path) as h, Observer(lab, h) as obs:      # polls every PBX and CTI at ~5 Hz
        record_start(lab, h)
        ...                                                  # the scenario
        obs.wait_until(lambda v: v.all_at(expected), 30)
"""

from harness.observe.cti_client import cti_exchange, forged_token
from harness.observe.endpoints import Endpoint, endpoints
from harness.observe.lab_capture import LabCapture, record_capture
from harness.observe.lab_state import lab_snapshot, record_start, roster
from harness.observe.observer import Observer
from harness.observe.points import CapturePoint, capture_points, configure_span, span_points, span_sources
from harness.observe.readers import (
    ObserveError,
    cti_query,
    cti_sessions,
    jsonrpc,
    parse_ul_dump,
    pbx_registrations,
)
from harness.observe.view import ENDED, View, read_view, wait_view
from harness.observe.wire import addresses, cti_observations, sip_observations

__all__ = [
    "ENDED",
    "CapturePoint",
    "Endpoint",
    "LabCapture",
    "ObserveError",
    "Observer",
    "View",
    "addresses",
    "capture_points",
    "configure_span",
    "cti_exchange",
    "cti_observations",
    "cti_query",
    "cti_sessions",
    "endpoints",
    "forged_token",
    "jsonrpc",
    "lab_snapshot",
    "parse_ul_dump",
    "pbx_registrations",
    "read_view",
    "record_capture",
    "record_start",
    "roster",
    "sip_observations",
    "span_points",
    "span_sources",
    "wait_view",
]
