"""Restore: heal what a controller that died (SIGKILL, power cut) left open in the journal.

Each open change is rebuilt from its record, healed, and read back: a heal that does not show within the
settle time leaves the change open in the journal and is reported `failed` (so `hil lab restore` exits 1
and a later restore tries again). A change whose controller still runs is that controller's to heal, and
is reported `skipped`. A line of the journal that cannot be read is reported `unreadable` and skipped; the
records after it are restored as usual. Latest first, as an undo would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.drivers.base import Steps
from harness.faults.base import SETTLE, Change, process_of, wait_for
from harness.faults.journal import Journal, JournalRead, default_journal, owner_alive
from harness.faults.registry import make_fault
from harness.lab import Lab


def _quietly(history: Any, method: str, *args: Any, **kw: Any) -> None:
    """A history write that must not stand between the lab and its heal (it may be closed already)."""
    if history is None:
        return
    try:
        getattr(history, method)(*args, **kw)
    except Exception:  # noqa: BLE001 - the heal matters more than its record
        pass


def _rebuild(lab: Lab, rec: dict[str, Any], steps: Steps | None) -> Change:
    desc = rec["fault"]
    return make_fault(
        lab,
        desc["kind"],
        desc["target"],
        steps=steps,
        id=rec["id"],
        max_duration=desc.get("max_duration"),
        notes=rec.get("notes") or {},
        **desc.get("params", {}),
    )


def restore(
    lab: Lab,
    journal_path: Path | str | None = None,
    *,
    history: Any = None,
    steps: Steps | None = None,
    include_live: bool = False,
    settle: float = SETTLE,
) -> list[dict[str, Any]]:
    """Heal every change still open in the journal whose controller is gone (or all, with include_live).

    Returns one entry per open change (`result`: healed, failed, skipped) and per unreadable line
    (`result`: unreadable, with `line`). Raises JournalError when the file is not a fault journal at all.
    """
    journal = Journal(Path(journal_path) if journal_path else default_journal(lab))
    read: JournalRead = journal.read()
    results: list[dict[str, Any]] = [
        {"result": "unreadable", "id": "-", "kind": "-", "target": "-", "line": n, "reason": why}
        for n, why in read.skipped
    ]
    for rec in reversed(journal.open_faults(read)):
        desc = rec["fault"]
        entry: dict[str, Any] = {"id": rec["id"], "kind": desc["kind"], "target": desc["target"]}
        results.append(entry)
        if owner_alive(rec.get("owner")) and not include_live:
            entry.update(
                result="skipped", reason=f"its controller (pid {rec['owner']['pid']}) is still running"
            )
            continue
        try:
            change = _rebuild(lab, rec, steps)
        except Exception as e:  # noqa: BLE001 - one record a later version wrote must not stop the rest
            entry.update(result="failed", error=f"cannot rebuild the record: {type(e).__name__}: {e}")
            continue
        entry.update(_heal_one(journal, change, history, settle))
    return results


def _heal_one(journal: Journal, change: Change, history: Any, settle: float) -> dict[str, Any]:
    """Heal, read back, journal the outcome; the entry fields to report."""
    heal_f = change.ops[1]
    _quietly(history, "invoke", process_of(change), heal_f, {"id": change.id, "restore": True}, sync=True)
    try:
        change.heal()
        shown = wait_for(change.heal_took_effect, settle)
        why = None if shown else f"heal sent but it does not show after {settle:g} s; still open"
    except Exception as e:  # noqa: BLE001 - reported, journaled, and the next record is restored
        why = f"{type(e).__name__}: {e}"
    if why is not None:
        journal.append({"op": "heal", "id": change.id, "result": "failed", "error": why, "by": "restore"})
        _quietly(history, "fail", process_of(change), heal_f, {"id": change.id}, error=why)
        return {"result": "failed", "error": why}
    journal.append({"op": "heal", "id": change.id, "result": "ok", "by": "restore", "via": change.healed_via})
    _quietly(history, "ok", process_of(change), heal_f, {"id": change.id, "restore": True})
    out: dict[str, Any] = {"result": "healed"}
    if change.healed_via:
        out["via"] = change.healed_via
    return out
