"""Each change the injector makes is recorded under a process of its own (`nemesis:<change id>`), so two
overlapping changes pair up in the history as they happened. Under one shared process name, a self-heal
that fired while another change was still being applied, or two injectors' heals that overlapped, were
mispaired by `pair_ops` (a process does one thing at a time): a heal or an inject left without its
completion, another completion stray, and `check_faults_healed` saw a fault "never healed"."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import checks, topology
from harness.faults import Change, Fault, Injector, register
from harness.faults.injector import process_of
from harness.history import History, pair_ops
from harness.lab import Lab
from harness.lab.dryrun import DryRunBackend

GATES: dict[str, threading.Event] = {}  # a change id -> released when its step may go on
ON: set[str] = set()


@register
class Valve(Fault):
    """A change whose apply read-back (`hold: verify`) or heal (`hold: heal`) waits for its gate."""

    kind = "test_valve"

    def check_safety(self) -> None:
        pass

    def plan(self) -> list[tuple[str, str]]:
        return [(self.target, "open")]

    def plan_heal(self) -> list[tuple[str, str]]:
        return [(self.target, "close")]

    def _wait(self, step: str) -> None:
        if self.params.get("hold") == step:
            assert GATES[self.id].wait(30), f"{self.id}: {step} never released"

    def _inject(self) -> None:
        ON.add(self.id)

    def took_effect(self) -> bool:
        self._wait("verify")
        return self.id in ON

    def _heal(self) -> None:
        self._wait("heal")
        ON.discard(self.id)

    def heal_took_effect(self) -> bool:
        return self.id not in ON


@pytest.fixture
def lab() -> Lab:
    topo = topology.load()
    return Lab(topo, DryRunBackend(topo))


@pytest.fixture
def injectors(lab: Lab, tmp_path: Path) -> Iterator[tuple[History, list[Injector]]]:
    hist = History(tmp_path / "h.jsonl")
    made = [Injector(lab, tmp_path / f"j{k}.jsonl", history=hist, out=lambda _: None) for k in range(2)]
    yield hist, made
    for g in GATES.values():
        g.set()
    for inj in made:
        inj.close()
    hist.close()
    GATES.clear()
    ON.clear()


def valve(inj: Injector, target: str, hold: str | None = None) -> Change:
    ch = inj.make("test_valve", target, hold=hold)
    GATES[ch.id] = threading.Event()
    return ch


def _paired(hist: History) -> tuple[dict[tuple[str, str], str | None], list[object]]:
    """(f, change id of the invoke) -> the change id its completion names (None: no completion)."""
    pairs, stray = pair_ops(hist.events)
    out = {}
    for p in pairs:
        done = p.completion.value.get("id") if p.completion is not None else None
        out[(p.invoke.f, p.invoke.value["id"])] = done
    return out, stray


def test_a_self_heal_during_another_changes_apply_pairs_up(
    injectors: tuple[History, list[Injector]], eventually: Callable[..., bool]
) -> None:
    hist, (inj, _) = injectors
    b = valve(inj, "sha-cti1", hold="verify")
    applying = threading.Thread(target=inj.inject, args=(b,), daemon=True)
    applying.start()  # b is applied and its read-back waits ...
    assert eventually(lambda: [e for e in hist.events if getattr(e, "f", "") == "fault.inject"])
    a = inj.inject(valve(inj, "sha-pbx1"), duration=0.05)  # ... while a is applied and heals itself
    assert eventually(lambda: a.id not in inj.active), "a did not heal itself"
    GATES[b.id].set()
    applying.join(30)
    assert b.id in inj.active
    inj.heal(b)
    paired, stray = _paired(hist)
    assert stray == []
    assert paired == {
        ("fault.inject", a.id): a.id, ("fault.heal", a.id): a.id,
        ("fault.inject", b.id): b.id, ("fault.heal", b.id): b.id,
    }  # fmt: skip
    assert {e.process for e in hist.events if e.value.get("id") == a.id} == {process_of(a)}
    assert process_of(a) != process_of(b) and process_of(a).startswith("nemesis:")


def test_two_injectors_heals_overlapping_pair_up(
    injectors: tuple[History, list[Injector]], eventually: Callable[..., bool]
) -> None:
    hist, (one, two) = injectors
    hist.observe("lab_snapshot", "controller", {"links": {}, "processes": {}, "complete": True})
    a = one.inject(valve(one, "sha-pbx1", hold="heal"))
    b = two.inject(valve(two, "ntg-pbx1"))
    healing = threading.Thread(target=one.heal, args=(a,), daemon=True)
    healing.start()  # a's heal is invoked and waits ...
    assert eventually(lambda: [e for e in hist.events if getattr(e, "f", "") == "fault.heal"])  # a's
    two.heal(b)  # ... while b's heal is invoked and completes
    GATES[a.id].set()
    healing.join(30)
    hist.observe("lab_snapshot", "controller", {"links": {}, "processes": {}, "complete": True})
    paired, stray = _paired(hist)
    assert stray == [] and paired[("fault.heal", a.id)] == a.id and paired[("fault.heal", b.id)] == b.id
    v = checks.check_faults_healed(hist.events)
    assert v.result == "valid", v


def test_restore_heals_each_change_under_its_own_process(tmp_path: Path) -> None:
    """A restore after a dead run heals its leftovers under each change's own process too, so two restored
    heals and a live injector's records never pair across changes."""
    from harness.faults.journal import Journal
    from harness.faults.restore import _heal_one

    class Left:
        ops = ("fault.inject", "fault.heal")
        healed_via = "test"

        def __init__(self, cid: str) -> None:
            self.id = cid

        def heal(self) -> None:
            pass

        def heal_took_effect(self) -> bool:
            return True

    history = History(tmp_path / "h.jsonl")
    journal = Journal(tmp_path / "j.jsonl")
    for cid in ("c1", "c2"):
        assert _heal_one(journal, Left(cid), history, 1.0)["result"] == "healed"  # type: ignore[arg-type]
    pairs, stray = pair_ops(list(history))
    assert not stray and [(p.invoke.process, p.outcome) for p in pairs] == [
        ("nemesis:c1", "ok"),
        ("nemesis:c2", "ok"),
    ]
