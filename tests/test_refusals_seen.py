"""The attacker's refusals as the wire shows them (issue 16, brief N4 item 2): the CTI's answers on a
connection that is no agent's become ``cti`` observations (harness/observe/wire.py), and
``check_answered_on_wire`` judges each attack by the local port its probe reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import observe
from harness.checks.refusals import check_answered_on_wire, wire_answers
from harness.decode import Event
from harness.history import History

CTI = ("198.18.1.20", 7000)
ATTACKER = "198.18.1.100"
CTI_ADDR = {CTI[0]: ("sha-cti1", "sha")}


def cti_ev(t: float, src: tuple[str, int], dst: tuple[str, int], body: dict[str, Any]) -> Event:
    return Event(t, 1, "cti", "tcp", src[0], src[1], dst[0], dst[1], type=body.get("type"), body=body)


def test_answers_on_connections_no_agents_are_observed() -> None:
    forged, admin, agent = (ATTACKER, 41001), (ATTACKER, 41002), (ATTACKER, 41003)
    evs = [
        cti_ev(1.0, forged, CTI, {"type": "login", "id": 1, "agent": "a00001", "token": "forged"}),
        cti_ev(1.1, CTI, forged, {"type": "error", "id": 1, "code": "token_invalid"}),
        cti_ev(2.0, admin, CTI, {"type": "admin", "op": "switch_order", "id": 2}),
        cti_ev(2.1, CTI, admin, {"type": "admin_ok", "op": "switch_order", "id": 2}),
        cti_ev(2.2, CTI, admin, {"type": "error", "id": 3, "code": "forbidden", "reason": "replayed"}),
        cti_ev(3.0, agent, CTI, {"type": "login", "id": 1, "agent": "a00002", "token": "t"}),
        cti_ev(3.1, CTI, agent, {"type": "login_ok", "id": 1, "agent": "a00002", "epoch": 1}),
        cti_ev(3.2, CTI, agent, {"type": "error", "id": 2, "code": "bad_state"}),  # an agent's: not kept
    ]
    vals = [v for _, _, v in observe.cti_observations(evs, CTI_ADDR)]
    assert vals[0] == {
        "event": "refused", "code": "token_invalid", "site": "sha", "client": f"{ATTACKER}:41001",
        "claimed": "a00001", "id": 1,
    }  # fmt: skip
    assert "agent" not in vals[0]  # a refusal is nobody's session
    assert [v["event"] for v in vals] == ["refused", "admin_ok", "refused", "login"]
    assert vals[2]["reason"] == "replayed" and vals[1]["op"] == "switch_order"


def _history(tmp_path: Path, answers: dict[int, list[dict[str, Any]]], ports: dict[str, int]) -> History:
    h = History(tmp_path / "h.jsonl")
    for f, port in ports.items():
        h.invoke(f"attacker:{f}", f, {"probe": "exchange"})
        h.fail(f"attacker:{f}", f, {"local_port": port, "replies": []}, error="x")
    for port, bodies in answers.items():
        evs = [cti_ev(5.0, CTI, (ATTACKER, port), b) for b in bodies]
        for _, dev, v in observe.cti_observations(evs, CTI_ADDR):
            h.observe("cti", dev, v)
    return h


def test_every_attack_answered_as_expected_is_valid(tmp_path: Path) -> None:
    h = _history(
        tmp_path,
        {41001: [{"type": "error", "code": "token_invalid"}], 41002: [{"type": "admin_ok", "op": "x"}]},
        {"attack.forged": 41001, "attack.admin": 41002},
    )
    v = check_answered_on_wire(
        h.events, ATTACKER, {"attack.forged": "token_invalid", "attack.admin": "admin_ok"}
    )
    assert v.result == "valid", v
    assert v.figures["answers"] == {"attack.forged": ["token_invalid"], "attack.admin": ["admin_ok"]}


def test_a_served_attack_is_invalid_and_an_unseen_one_unknown(tmp_path: Path) -> None:
    h = _history(tmp_path, {41001: [{"type": "admin_ok", "op": "x"}]}, {"attack.replay": 41001})
    v = check_answered_on_wire(h.events, ATTACKER, {"attack.replay": "forbidden:replayed"})
    assert v.result == "invalid" and v.witnesses[0]["got"] == ["admin_ok"]
    h2 = _history(tmp_path / "2", {}, {"attack.replay": 41001})
    assert (
        check_answered_on_wire(h2.events, ATTACKER, {"attack.replay": "forbidden:replayed"}).result
        == "unknown"
    )
    assert check_answered_on_wire(h2.events, ATTACKER, {"attack.none": "x"}).result == "unknown"


def test_wire_answers_counts_the_floods_refusals_by_port(tmp_path: Path) -> None:
    h = _history(
        tmp_path,
        {
            20001: [{"type": "error", "code": "login_timeout"}],
            45000: [{"type": "error", "code": "login_timeout"}],
        },
        {},
    )
    assert wire_answers(h.events, ATTACKER, (20000, 29999)) == {20001: ["login_timeout"]}
