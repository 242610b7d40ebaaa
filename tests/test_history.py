"""The history: what a line holds, that it is only ever appended to, and that a crash cannot make it
unreadable."""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from pathlib import Path

import pytest

from harness.history import (
    History,
    HistoryError,
    HistoryWarning,
    Obs,
    Op,
    event_from_dict,
    pair_ops,
)

HERE = Path(__file__).parent / "histories"


def fixed_clock(start: float = 100.0, step: float = 0.5):
    """A monotonic clock that advances `step` per reading, so times in a test are known."""
    now = [start - step]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_append_writes_one_compact_line_per_event(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    with History(p, clock=fixed_clock(), wall_clock=lambda: 1.7e9) as h:
        h.invoke("nemesis", "fault.inject", {"id": "f1", "target": "sha-pbx1"})
        h.ok("nemesis", "fault.inject", {"id": "f1"}, source="harness.faults")
        h.fail("caller-1", "call.place", {"call": "c1"}, error="503 Service Unavailable")
        h.info("caller-2", "call.place")
        h.observe("pbx_snapshot", "ntg-pbx1", {"site": "ntg", "registrations": []})
    raw = p.read_text()
    assert raw.endswith("\n") and " " not in raw.replace("503 Service Unavailable", "")
    got = lines(p)
    assert [d["i"] for d in got] == [0, 1, 2, 3, 4]
    assert [d["t"] for d in got] == [100.0, 100.5, 101.0, 101.5, 102.0]
    assert got[0] == {
        "i": 0,
        "t": 100.0,
        "wall": 1.7e9,
        "type": "invoke",
        "process": "nemesis",
        "f": "fault.inject",
        "source": "nemesis",  # source defaults to the process
        "value": {"id": "f1", "target": "sha-pbx1"},
    }
    assert got[1]["source"] == "harness.faults"
    assert got[2]["error"] == "503 Service Unavailable"
    assert "value" not in got[3] and "error" not in got[3]  # None fields are left out
    assert got[4] == {
        "i": 4,
        "t": 102.0,
        "wall": 1.7e9,
        "type": "obs",
        "kind": "pbx_snapshot",
        "source": "ntg-pbx1",
        "value": {"site": "ntg", "registrations": []},
    }


def test_load_round_trips_and_keeps_events_in_memory(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    h = History(p)
    a = h.invoke("caller-1", "call.place", {"to": "4000"})
    b = h.ok("caller-1", "call.place", {"answered_by": "a00003"})
    c = h.observe("sip", "ntg-pbx1", {"method": "REGISTER", "status": 200}, t=5.0, wall=1.0)
    assert h.events == [a, b, c] and len(h) == 3 and h[2] is c and list(h) == [a, b, c]
    h.close()
    with pytest.raises(HistoryError, match="closed"):
        h.observe("sip", "x", {})
    loaded = History.load(p)
    assert loaded.events == [a, b, c]
    assert isinstance(loaded[0], Op) and isinstance(loaded[2], Obs)
    assert loaded[2].t == 5.0 and loaded[2].type == "obs"
    with pytest.raises(HistoryError, match="read-only"):
        loaded.observe("sip", "x", {})


def test_reopening_continues_the_index_and_never_rewrites(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    with History(p) as h:
        for k in range(3):
            h.observe("agent_state", "sha-cti1", {"agent": "a00001", "state": "ready", "n": k})
    before = p.read_bytes()
    with History(p) as h:
        assert len(h) == 3  # a reopened history knows what it holds
        e = h.invoke("nemesis", "fault.heal", {"id": "f1"})
    assert e.i == 3
    assert p.read_bytes().startswith(before)


def test_value_that_is_not_json_writes_nothing(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    with History(p) as h:
        h.observe("cti", "sha-cti1", {"ok": 1})
        with pytest.raises(TypeError):
            h.observe("cti", "sha-cti1", {"bad": object()})
        with pytest.raises(ValueError):
            h.observe("cti", "sha-cti1", {"bad": float("nan")})
        e = h.observe("cti", "sha-cti1", {"ok": 2})
    assert e.i == 1  # the failed appends used no index
    assert [d["value"]["ok"] for d in lines(p)] == [1, 2]


def test_append_checks_what_an_event_needs(tmp_path: Path) -> None:
    with History(tmp_path / "h.jsonl") as h:
        with pytest.raises(ValueError, match="kind"):
            h.append("obs", source="x")
        with pytest.raises(ValueError, match="process"):
            h.append("ok", source="x", f="call.place")
        with pytest.raises(ValueError, match="unknown event type"):
            h.append("done", source="x", process="p", f="g")


def test_sync_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    with History(tmp_path / "h.jsonl") as h:
        h.invoke("nemesis", "fault.inject", {"id": "f1"}, sync=True)  # durable before the fault is made
        assert len(calls) == 1
        h.observe("sip", "x", {})
        assert len(calls) == 1  # line-buffered, but not fsynced per line
        h.sync()
        assert len(calls) == 2
    assert len(calls) == 3  # close syncs


def test_line_buffered_so_a_reader_sees_each_event_at_once(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    with History(p) as h:
        h.observe("sip", "x", {"n": 1})
        assert len(History.load(p)) == 1  # no sync needed to reach the OS


def test_concurrent_appends_from_threads(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    n_threads, per = 8, 2000
    with History(p) as h:

        def work(k: int) -> None:
            for j in range(per):
                h.observe("cti", f"t{k}", {"k": k, "j": j, "pad": "x" * (j % 50)})

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    got = lines(p)  # every line parses: no interleaving
    assert [d["i"] for d in got] == list(range(n_threads * per))
    ts = [d["t"] for d in got]
    assert ts == sorted(ts)  # file order is index order is time order
    for k in range(n_threads):  # each thread's own events stay in its order
        assert [d["value"]["j"] for d in got if d["source"] == f"t{k}"] == list(range(per))


def test_torn_last_line_is_ignored_with_a_warning() -> None:
    p = HERE / "torn_last_line.jsonl"
    assert not p.read_bytes().endswith(b"\n")
    with pytest.warns(HistoryWarning, match="torn last line"):
        h = History.load(p)
    good = p.read_bytes().count(b"\n")
    assert len(h) == good and [e.i for e in h] == list(range(good))


def test_torn_multibyte_character_is_ignored(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    with History(p) as h:
        h.observe("cti", "sha-cti1", {"note": "ok"})
    line = json.dumps(
        {"i": 1, "t": 1.0, "wall": 1.0, "type": "obs", "kind": "cti", "source": "x", "v": "坐席"},
        ensure_ascii=False,
    )
    with open(p, "ab") as f:
        f.write(line.encode()[: line.encode().index("坐".encode()) + 1])  # cut inside a UTF-8 character
    with pytest.warns(HistoryWarning, match="torn last line"):
        assert len(History.load(p)) == 1


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    with History(p) as h:
        h.observe("cti", "x", {"n": 1})
        h.observe("cti", "x", {"n": 2})
    p.write_bytes(p.read_bytes().rstrip(b"\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(History.load(p)) == 2
    with History(p) as h:  # appending ends the line first
        h.observe("cti", "x", {"n": 3})
    assert [d["value"]["n"] for d in lines(p)] == [1, 2, 3]


def test_reopening_a_torn_history_marks_the_tear_and_stays_loadable(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    torn = (HERE / "torn_last_line.jsonl").read_bytes()
    p.write_bytes(torn)
    with pytest.warns(HistoryWarning, match="torn last line"), History(p) as h:
        e = h.observe("pbx_snapshot", "ntg-pbx1", {"site": "ntg", "registrations": []})
    assert p.read_bytes().startswith(torn)  # the torn bytes are left as they were
    with pytest.warns(HistoryWarning, match="torn by an earlier crash"):
        again = History.load(p)
    resume = again[-2]
    assert isinstance(resume, Op) and resume.f == "history.resume" and resume.type == "info"
    assert resume.value == {"torn_bytes": len(torn) - torn.rindex(b"\n") - 1}
    assert again[-1] == e and [x.i for x in again] == list(range(len(again)))


def test_corruption_in_the_middle_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    with History(p) as h:
        for _ in range(3):
            h.observe("cti", "x", {})
    raw = p.read_bytes().split(b"\n")
    raw[1] = raw[1][:20]
    p.write_bytes(b"\n".join(raw))
    with pytest.raises(HistoryError, match=":2:"):
        History.load(p)


GOOD_LINE = b'{"i":0,"t":1,"wall":2,"type":"obs","kind":"cti","source":"x"}\n'


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
            ":1: not UTF-8 text: byte 0x89 at column 1",
        ),
        (bytes(range(128, 256)) * 20, ":1: not UTF-8 text: byte 0x80 at column 1"),  # no newline at all
        (
            GOOD_LINE + '{"i":1,"v":"caf\xe9"}\n'.encode("latin-1") + GOOD_LINE,
            ":2: not UTF-8 text: byte 0xe9",
        ),
        (
            GOOD_LINE + b'{"i":1,"v":"\xff\xfe x"}',
            ":2: not UTF-8 text: byte 0xff",
        ),  # last line, not a torn char
    ],
)
def test_a_file_that_is_not_utf8_text_is_a_history_error(tmp_path: Path, data: bytes, where: str) -> None:
    p = tmp_path / "h.jsonl"
    p.write_bytes(data)
    for opener in (History.load, History):
        with pytest.raises(HistoryError) as e:
            opener(p)
        msg = str(e.value)
        assert msg.startswith(f"{p}{where}") and "not a history file" in msg, msg
        assert "\n" not in msg and "surrogate" not in msg and "codec" not in msg
    assert p.read_bytes() == data  # refused before anything was written


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    p.write_text(
        '{"i":0,"t":1,"wall":2,"type":"obs","kind":"cti","source":"x"}\n\n'
        '{"i":1,"t":1.5,"wall":2,"type":"ok","process":"p","f":"g","source":"p","extra":1}\n'
    )
    h = History.load(p)
    assert [e.i for e in h] == [0, 1] and h[0].t == 1.0 and isinstance(h[0].t, float)


def test_non_increasing_index_warns(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    line = '{"i":0,"t":1,"wall":2,"type":"obs","kind":"cti","source":"x"}\n'
    p.write_text(line * 2)
    with pytest.warns(HistoryWarning, match="does not increase"):
        assert len(History.load(p)) == 2


@pytest.mark.parametrize(
    ("d", "msg"),
    [
        ([], "JSON object"),
        ({"t": 1, "wall": 1, "type": "obs", "kind": "k", "source": "s"}, "missing field 'i'"),
        ({"i": -1, "t": 1, "wall": 1, "type": "obs", "kind": "k", "source": "s"}, "'i'"),
        ({"i": True, "t": 1, "wall": 1, "type": "obs", "kind": "k", "source": "s"}, "'i'"),
        ({"i": 0, "t": "1", "wall": 1, "type": "obs", "kind": "k", "source": "s"}, "'t'"),
        ({"i": 0, "t": 1, "wall": None, "type": "obs", "kind": "k", "source": "s"}, "'wall'"),
        ({"i": 0, "t": 1, "wall": 1, "type": "obs", "source": "s"}, "'kind'"),
        ({"i": 0, "t": 1, "wall": 1, "type": "obs", "kind": "k", "source": ""}, "'source'"),
        ({"i": 0, "t": 1, "wall": 1, "type": "ok", "f": "g", "source": "s"}, "'process'"),
        ({"i": 0, "t": 1, "wall": 1, "type": "ok", "process": "p", "source": "s"}, "'f'"),
        (
            {"i": 0, "t": 1, "wall": 1, "type": "fail", "process": "p", "f": "g", "source": "s", "error": 5},
            "'error'",
        ),
        ({"i": 0, "t": 1, "wall": 1, "type": "done", "process": "p", "f": "g", "source": "s"}, "'type'"),
    ],
)
def test_event_schema_is_checked(d: object, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        event_from_dict(d)


def test_nan_in_a_file_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    p.write_text('{"i":0,"t":NaN,"wall":2,"type":"obs","kind":"cti","source":"x"}\n')
    with pytest.raises(HistoryError, match="NaN"):
        History.load(p)


def test_pair_ops_pairs_by_process_like_jepsen(tmp_path: Path) -> None:
    with History(tmp_path / "h.jsonl") as h:
        a = h.invoke("caller-1", "call.place", {"call": "c1"})
        b = h.invoke("caller-2", "call.place", {"call": "c2"})
        h.observe("sip", "ntg-pbx1", {})
        b_ok = h.ok("caller-2", "call.place")
        a_fail = h.fail("caller-1", "call.place", error="486 Busy Here")
        c = h.invoke("caller-1", "call.place", {"call": "c3"})
        d = h.invoke("caller-1", "call.place", {"call": "c4"})  # c3 never completed
        stray = h.ok("caller-3", "call.place")
        wrong_f = h.ok("caller-1", "fault.heal")
        d_ok = h.ok("caller-1", "call.place")
    pairs, strays = pair_ops(h)
    assert [(p.invoke, p.completion) for p in pairs] == [(a, a_fail), (b, b_ok), (c, None), (d, d_ok)]
    assert pairs[0].outcome == "fail" and pairs[2].outcome is None
    assert strays == [stray, wrong_f]


def test_100k_events_append_and_load_fast(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    reg = {"method": "REGISTER", "status": 200, "extension": "1001", "site": "ntg", "expires": 300}
    h = History(p)
    t0 = time.perf_counter()
    for k in range(50_000):
        h.observe("sip", "ntg-pbx1", reg)
        h.invoke("caller-1", "call.place", {"call": k})
    h.sync()
    appended = time.perf_counter() - t0
    h.close()
    t0 = time.perf_counter()
    loaded = History.load(p)
    took = time.perf_counter() - t0
    assert len(loaded) == 100_000
    # Typically ~0.5-0.8 s each on a small CI machine; the bounds leave room for a busy one.
    assert appended < 3.0, appended
    assert took < 3.0, took
