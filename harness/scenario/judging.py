"""Judging a scenario: the standard checkers on its history, the verdict file, and the Allure attachments.

Every verdict is a checker's (harness.checks) on the recorded history, read back from its file: the
scenario judges nothing from memory. The verdict file and the attachments are the report's
(harness.report): a script gets the same files as a pytest session, without Allure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import checks, report
from harness.checks import Verdict
from harness.history import History
from harness.lab import Lab
from harness.observe import LabCapture
from harness.scenario.settings import Settings

__all__ = ["Judging"]


class Judging:
    """The judging of :class:`harness.scenario.Scenario` (a mixin: the run supplies these)."""

    lab: Lab
    name: str
    settings: Settings
    dry_run: bool
    history_path: Path
    verdict_path: Path
    capture: LabCapture | None
    decoded: dict[str, Any]
    plan: list[dict[str, Any]]
    timings: dict[str, float]
    verdicts: list[Verdict]

    def standard_checks(
        self,
        *,
        expect: str | Mapping[str, str] = "surviving",
        affected: Sequence[str] | None = None,
        recovery: bool = True,
        fault: str | None = None,
        final_expect: str | Mapping[str, str] | None = None,
        final_affected: Sequence[str] | None = None,
        calls: bool = False,
        expectations: bool = True,
    ) -> list[Verdict]:
        """The checkers every scenario runs, on its history: where agents end up, no split brain, recovery
        within the bound (if ``recovery``), every fault healed, capture complete, the scenario's own
        expectations (unless it sets none: ``expectations=False``), and calls if any."""
        if self.dry_run:
            return []
        ev = self.events()
        rt = checks.depends_on_capture(checks.check_recovery_time)
        sb = checks.depends_on_capture(checks.check_no_split_brain)
        out = [
            checks.check_single_registration(
                ev,
                expect=final_expect if final_expect is not None else expect,
                affected=final_affected if final_affected is not None else affected,
            ),
            sb(ev),
        ]
        if recovery:
            out.append(rt(ev, bound=self.settings.bound, expect=expect, affected=affected, fault=fault))
        out += [checks.check_faults_healed(ev), checks.check_capture_complete(ev)]
        if expectations:
            out.append(checks.check_expectations(ev))
        if calls:
            out.append(checks.check_no_lost_call(ev))
        return out

    def events(self) -> list[Any]:
        """The recorded history (after :meth:`finish`), for checkers of a scenario's own."""
        if self.dry_run:
            return []
        return History.load(self.history_path).events

    def judge(self, verdicts: Sequence[Verdict]) -> Verdict:
        """Fold the verdicts, keep them, and write the verdict file (reports/verdicts/<scenario>.json)."""
        self.verdicts = list(verdicts)
        if self.dry_run:  # nothing was done, so nothing is judged; planning itself raises if refused
            return Verdict(self.name, "valid", f"dry run: {len(self.plan)} planned entries")
        overall = checks.compose(*self.verdicts, name=self.name)
        payload = report.verdicts_payload(self.verdicts, history=self.history_path, scenario=self.name)
        payload["timings"] = self.timings
        payload["bound"] = self.settings.bound
        self.verdict_path.parent.mkdir(parents=True, exist_ok=True)
        self.verdict_path.write_text(json.dumps(payload, indent=1, default=str))
        return overall

    def conclude(self, verdicts: Sequence[Verdict], **attach: Any) -> Verdict:
        """Judge (see :meth:`judge`) and attach the evidence to the running Allure test, if any."""
        overall = self.judge(verdicts)
        if self.dry_run:
            return overall
        logs = {p.name: p for p in self.device_logs()}
        if self.decoded and "events" not in attach:  # decoded once already: the ladder needs no second pass
            attach["events"] = sorted(
                (e for d in self.decoded.values() for e in d.events), key=lambda e: e.time
            )
        report.attach_run(
            self.history_path,
            self.verdicts,
            pcaps=self.pcaps(),
            logs=logs,
            topology=self.lab.topology.file,
            scenario=self.name,
            extra={"timings": self.timings, "bound": self.settings.bound},
            **attach,
        )
        return overall

    def device_logs(self) -> list[Path]:
        """The lab's device logs (kamailio, CTI, UL, swarm) for the report."""
        logs = self.lab.backend.logs_dir()
        return sorted(p for p in logs.glob("*.log") if p.is_file()) if logs is not None else []

    def failure_message(self) -> str:
        return report.failure_message(self.verdicts)

    def pcaps(self) -> list[Path]:
        return [r.pcap_path for r in (self.capture.results if self.capture else []) if r.pcap_path.exists()]

    def recovery(self) -> dict[str, Any]:
        """The recovery figures (p50 / p95 / max) of the first recovery verdict, for summaries."""
        for v in self.verdicts:
            if v.name == "recovery_time":
                return {k: v.figures.get(k) for k in ("p50", "p95", "max", "recovered", "affected", "bound")}
        return {}
