"""The longer fuzz run of the parsers (issue 16, item 4): how many cases per second each one takes, and
whether any case breaks one.

Usage:

    .venv/bin/python bench/bench_fuzz.py [--seconds N] [--only sip,capture] [--json FILE]

The same strategies and contracts as the bounded run in ``make test`` (tests/test_fuzz_targets.py and the
drivers in tests/test_fuzz_cti.py and tests/test_fuzz_login.py), run for N seconds in all, split evenly
between the parsers: the SIP parsers (sipcore.scan and sipcore.message), a CTI line (stack/cti/protocol.py),
a CTI connection (stack/cti/connection.py on a real CtiServer's handlers, fake transport), a capture file
(harness/decode: pcap/pcapng reader, packets, TCP, messages) and a UL request (stack/login/routes.py through
aiohttp's test client). Hypothesis generates and, on a failure, shrinks; a case per second counts the
generation too, which is most of the cost for the cheap parsers. A failing case is printed, the run goes on
with the next parser, and the exit status is 1: add the case to tests/fuzz_corpus/ with the fix.
No network beyond 127.0.0.1 (the UL's test server); nothing of a lab is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the strategies and contracts live with the tests

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from test_fuzz_cti import check_session, sessions  # noqa: E402
from test_fuzz_login import LOOP, ask, check_answer, requests, start_ul  # noqa: E402
from test_fuzz_targets import TARGETS  # noqa: E402

from bench.sysinfo import describe  # noqa: E402

BATCH = 100  # cases per Hypothesis run; runs repeat until the parser's share of the time is spent


def _batch_settings(count: int) -> settings:
    return settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )


def fuzz(name: str, strategy: Any, contract: Callable[[Any], None], seconds: float) -> dict[str, Any]:
    """Run ``contract`` on cases of ``strategy`` for ``seconds``; the figures, and the first failure."""
    cases = 0

    def one(case: Any) -> None:
        nonlocal cases
        cases += 1
        contract(case)

    run = _batch_settings(BATCH)(given(strategy)(one))
    failure = None
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            run()
        except Exception as err:  # noqa: BLE001 - Hypothesis re-raises the contract's own error, shrunk
            failure = "".join(traceback.format_exception_only(type(err), err)).strip()
            break
    elapsed = time.perf_counter() - t0
    rate = cases / elapsed if elapsed else 0.0
    verdict = "FAIL" if failure else "ok"
    print(f"{name:15s} {cases:8d} cases in {elapsed:6.1f} s = {rate:7,.0f} cases/s  {verdict}")
    if failure:
        print(f"  {failure[:2000]}")
    return {"parser": name, "cases": cases, "seconds": round(elapsed, 2), "cases_per_s": round(rate, 1),
            "failure": failure}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds in all, split between the parsers")
    ap.add_argument("--only", default="", help="comma-separated parsers (default: all)")
    ap.add_argument("--json", dest="json_file", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if args.seconds <= 0:
        ap.error("--seconds must be a positive number")
    names = [*TARGETS, "cti_connection", "ul_request"]
    chosen = [t for t in args.only.split(",") if t] or names
    unknown = [t for t in chosen if t not in names]
    if unknown:
        ap.error(f"unknown parser {', '.join(unknown)}: one of {', '.join(names)}")

    # The UL says each refused request in a warning: thousands of lines here. Errors still show.
    logging.getLogger("stack.login").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="hil-bench-fuzz-") as tmp:
        ul = LOOP.run_until_complete(start_ul(Path(tmp)))
        targets: dict[str, tuple[Any, Callable[[Any], None]]] = {
            **TARGETS,
            "cti_connection": (sessions(), check_session),
            "ul_request": (requests(), lambda req: check_answer(*ask(ul, *req))),
        }
        info = describe(())
        share = args.seconds / len(chosen)
        print(f"fuzzing {', '.join(chosen)}: {share:.1f} s each")
        try:
            results = [fuzz(name, *targets[name], share) for name in chosen]
        finally:
            LOOP.run_until_complete(ul.close())
            asyncio.set_event_loop(None)
    failed = [r["parser"] for r in results if r["failure"]]
    print("all parsers: " + (f"FAIL ({', '.join(failed)})" if failed else "no failure"))
    if args.json_file:
        doc = {"bench": "fuzz", "system": info, "seconds": args.seconds, "results": results}
        args.json_file.write_text(json.dumps(doc, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
