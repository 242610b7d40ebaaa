"""The CTI's line handling under fuzz (issue 16, item 4): a real CtiServer's handlers behind a Connection
(stack/cti/connection.py) fed by a fake transport, with garbage, mutated, oversized and deeply nested lines
split at any byte. Every line gets an answer or the connection is cut for a stated reason (too_large, too
many errors); nothing is logged as a handler crash, and nothing of the connection outlives it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_targets import CTI_SEEDS, FUZZ, cti_lines

from stack.common import auth
from stack.cti import protocol as P
from stack.cti.connection import Connection
from stack.cti.server import CtiServer

SECRET = "fuzz-secret"
GOOD_TOKEN = auth.mint(SECRET, {"agent": "a00001", "site": "sha", "epoch": 3, "ext": "10001"}, 3600)


class FakeTransport(asyncio.Transport):
    """What a Connection writes, and whether it closed; the write buffer is always empty."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Crashes(logging.Handler):
    """Records what the CTI logs at ERROR: a handler that raised something it should have refused."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


LOOP = asyncio.new_event_loop()
CRASHES = Crashes()
logging.getLogger("stack.cti").addHandler(CRASHES)


def teardown_module() -> None:
    LOOP.close()


def server() -> CtiServer:
    return CtiServer("sha", SECRET, pbx_rpc=None, ul_url=None)


async def serve(srv: CtiServer, chunks: list[bytes]) -> tuple[FakeTransport, Connection]:
    conn = Connection(srv)
    tr = FakeTransport()
    conn.connection_made(tr)
    for chunk in chunks:
        if conn.closed:
            break
        conn.data_received(chunk)
        await settle(conn)
    if not conn.closed:
        conn.eof_received()
        await settle(conn)
    conn.connection_lost(None)
    await settle(conn)
    return tr, conn


async def settle(conn: Connection, timeout: float = 10.0) -> None:
    """Until the awaiting handler (login, link_phone) is done: polled, with a generous deadline."""
    end = time.monotonic() + timeout
    await asyncio.sleep(0)
    while conn._task is not None:
        assert time.monotonic() < end, "a handler never finished"
        await asyncio.sleep(0.001)


def replies(tr: FakeTransport) -> list[dict[str, Any]]:
    text = bytes(tr.out)
    assert not text or text.endswith(b"\n"), "a partial reply line"
    out = [json.loads(line) for line in text.splitlines()]
    for msg in out:
        assert isinstance(msg, dict) and isinstance(msg.get("type"), str), msg
        if msg["type"] == "error":
            assert msg["code"] in P.ERRORS, msg
    return out


@st.composite
def sessions(draw: Any) -> list[bytes]:
    """A session's bytes cut into chunks: fuzzed lines between real ones (a good login among them)."""
    good = [json.dumps({**m, "token": GOOD_TOKEN} if m["type"] == "login" else m).encode() for m in CTI_SEEDS]
    lines = draw(st.lists(st.one_of(cti_lines(), st.sampled_from(good)), min_size=1, max_size=8))
    data = b"\n".join(lines) + draw(st.sampled_from([b"\n", b"", b"\r\n"]))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]


def check_session(chunks: list[bytes]) -> None:
    """One connection's life on a fresh server: answers or a stated cut, no crash, nothing left behind."""
    srv = server()
    CRASHES.records.clear()
    tr, conn = LOOP.run_until_complete(serve(srv, chunks))
    assert not CRASHES.records, [r.getMessage() for r in CRASHES.records]
    got = replies(tr)
    codes = [m.get("code") for m in got]
    whole_lines = sum(1 for c in chunks for _ in c.split(b"\n")[:-1]) + 1
    ended = [m for m in got if m.get("event") == "ended"]  # a session that ends with the connection says so
    assert len(ended) <= 1 and (not ended or got[-1] is ended[0])
    assert len(got) - len(ended) <= whole_lines
    if "too_large" in codes:
        assert codes[-1] == "too_large" and tr.closed
    assert conn.closed and conn not in srv.conns
    assert not srv.sessions  # the connection is gone: so is its session


@FUZZ
@given(sessions())
def test_connection_answers_or_cuts_never_crashes(chunks: list[bytes]) -> None:
    check_session(chunks)


def test_a_thousand_deep_line_is_bad_json_and_the_next_line_is_served() -> None:
    srv = server()
    deep = b'{"type":"heartbeat","x":' + b'{"a":' * 1000 + b"1" + b"}" * 1001
    tr, _conn = LOOP.run_until_complete(serve(srv, [deep + b'\n{"type":"status","id":9}\n']))
    got = replies(tr)
    assert got[0]["code"] == "bad_json" and got[1].get("id") == 9
