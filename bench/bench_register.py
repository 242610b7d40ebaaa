"""Bench the emulated phones' REGISTER rate (digest auth) against SIPp's, on the same Kamailio, same run.

Why: a failover re-registers 1,000+ phones at once, and the swarm runs 10,000 phones on one asyncio
loop; the product target is at least half of SIPp's rate (a C++ load generator) against the same PBX.
Both do the same work per registration: REGISTER -> 401 -> REGISTER with MD5 digest (qop=auth) -> 200,
one fresh Call-ID per extension, at most ``--window`` registrations in flight. Each round runs both
(order alternating), the verdict uses the medians. A separate child process also measures the memory of
``--memory-phones`` registered phones. Loopback only: SIP 26500, RPC 26501, phones 26510-26520.

    .venv/bin/python bench/bench_register.py [--phones 2000] [--window 200] [--rounds 3] [--json FILE]

Needs kamailio and sipp (Debian: ``apt-get install -y kamailio sip-tester``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sysinfo import describe  # noqa: E402
from stack.phone.ua import Phone, SipEndpoint  # noqa: E402
from virtual import pbx  # noqa: E402

HOST = "127.0.0.1"
SIP_PORT, RPC_PORT = 26500, 26501
SWARM_PORT, SIPP_PORT, MEM_PORT = 26510, 26511, 26512
SCENARIO = Path(__file__).with_name("sipp_register_auth.xml")
SWARM_BASE, SIPP_BASE, MEM_BASE, WARM_BASE = 200000, 300000, 400000, 500000


def extensions(base: int, n: int) -> dict[str, str]:
    return {str(base + i): f"pw-{base + i}" for i in range(n)}


async def register_windowed(phones: list[Phone], window: int) -> list[bool]:
    """Register all phones with at most ``window`` registrations in flight (like SIPp's ``-l``)."""
    results = [False] * len(phones)
    todo = iter(range(len(phones)))

    async def worker() -> None:
        for i in todo:
            results[i] = await phones[i].register()

    await asyncio.gather(*(worker() for _ in range(min(window, len(phones)))))
    return results


async def swarm_round(exts: dict[str, str], window: int, port: int) -> dict[str, Any]:
    """Register every extension through one SipEndpoint, ``window`` at a time; rate and CPU."""
    ep = await SipEndpoint.open(HOST, port)
    phones = [Phone(ep, e, pw, (HOST, SIP_PORT)) for e, pw in exts.items()]
    gc.collect()
    cpu0, t0 = time.process_time(), time.monotonic()
    results = await register_windowed(phones, window)
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    stats = dict(ep.stats)
    for p in phones:
        p.close()
    ep.close()
    ok = sum(results)
    return {
        "registered": ok,
        "seconds": round(elapsed, 4),
        "rate_per_s": round(ok / elapsed, 1),
        "cpu_seconds": round(cpu, 4),
        "cpu_us_per_registration": round(cpu / max(ok, 1) * 1e6, 1),
        "retransmits": stats["retransmits"],
        "timeouts": stats["timeouts"],
    }


def sipp_round(exts: dict[str, str], window: int, workdir: Path) -> dict[str, Any]:
    """Run SIPp over the same extensions with the REGISTER-with-auth scenario; rate and CPU."""
    inf = workdir / "sipp_users.csv"
    lines = ["SEQUENTIAL"] + [f"{e};[authentication username={e} password={pw}]" for e, pw in exts.items()]
    inf.write_text("\n".join(lines) + "\n")
    os.chmod(inf, 0o600)
    argv = [
        "sipp",
        "-sf",
        str(SCENARIO),
        "-inf",
        str(inf),
        f"{HOST}:{SIP_PORT}",
        "-i",
        HOST,
        "-p",
        str(SIPP_PORT),
        "-m",
        str(len(exts)),
        "-l",
        str(window),
        "-r",
        "1000000",
        "-rp",
        "1000",
        "-timeout",
        "120s",
        "-nostdin",
        "-buff_size",
        str(4 << 20),
    ]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    ok = _sipp_counter(proc.stdout, "Successful call")
    failed = _sipp_counter(proc.stdout, "Failed call")
    retrans = re.findall(r"REGISTER -+>\s+\d+\s+(\d+)", proc.stdout)
    return {
        "registered": ok,
        "failed": failed,
        "exit_code": proc.returncode,
        "seconds": round(elapsed, 4),
        "rate_per_s": round(ok / elapsed, 1),
        "cpu_seconds": round(cpu, 4),
        "cpu_us_per_registration": round(cpu / max(ok, 1) * 1e6, 1),
        "retransmits": sum(int(r) for r in retrans[-2:]),
    }


def _sipp_counter(screen: str, name: str) -> int:
    """The cumulative value of a counter on SIPp's final statistics screen."""
    found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
    return int(found[-1]) if found else 0


def memory_child(n: int, window: int) -> None:
    """(Child process) register ``n`` phones and print RSS before/after as JSON."""
    import tracemalloc

    async def main() -> dict[str, Any]:
        ep = await SipEndpoint.open(HOST, MEM_PORT)
        gc.collect()
        rss0 = psutil.Process().memory_info().rss
        tracemalloc.start()
        phones = [Phone(ep, e, pw, (HOST, SIP_PORT)) for e, pw in extensions(MEM_BASE, n).items()]
        t0 = time.monotonic()
        ok = sum(await register_windowed(phones, window))
        took = time.monotonic() - t0
        gc.collect()
        traced, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = psutil.Process().memory_info().rss
        tasks = len(asyncio.all_tasks()) - 1
        for p in phones:
            p.close()
        ep.close()
        return {
            "phones": n,
            "registered": ok,
            "seconds": round(took, 3),
            "rss_before_mib": round(rss0 / 2**20, 1),
            "rss_after_mib": round(rss1 / 2**20, 1),
            "rss_per_phone_bytes": round((rss1 - rss0) / n),
            "python_heap_per_phone_bytes": round(traced / n),
            "tasks_while_idle": tasks,
        }

    print(json.dumps(asyncio.run(main())))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phones", type=int, default=2000, help="registrations per tool per round")
    ap.add_argument("--window", type=int, default=200, help="registrations in flight (SIPp -l)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory-phones", type=int, default=10000, help="0 to skip the memory figure")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.window)
        return 0
    if not shutil.which("sipp"):
        print("sipp not found: apt-get install -y sip-tester", file=sys.stderr)
        return 2

    n = args.phones
    all_exts = {
        **extensions(WARM_BASE, 200),
        **extensions(SWARM_BASE, n),
        **extensions(SIPP_BASE, n),
        **extensions(MEM_BASE, args.memory_phones),
    }
    results: dict[str, Any] = {
        "bench": "bench_register",
        **describe(("kamailio", "sipp")),
        "params": {"phones": n, "window": args.window, "rounds": args.rounds, "kamailio_children": 4},
    }
    with tempfile.TemporaryDirectory(prefix="bench_register_") as tmp:
        work = Path(tmp)
        spec = pbx.PbxSpec("bench-pbx", HOST, SIP_PORT, RPC_PORT, "bench.lab", work / "pbx", all_exts)
        proc = pbx.start(spec)
        try:
            pbx.wait_ready(HOST, SIP_PORT, 10.0, proc)
            asyncio.run(swarm_round(extensions(WARM_BASE, 200), args.window, SWARM_PORT))  # warm-up
            swarm_runs, sipp_runs = [], []
            for i in range(args.rounds):
                order = ("swarm", "sipp") if i % 2 == 0 else ("sipp", "swarm")
                for tool in order:
                    if tool == "swarm":
                        r = asyncio.run(swarm_round(extensions(SWARM_BASE, n), args.window, SWARM_PORT))
                        swarm_runs.append(r)
                    else:
                        r = sipp_round(extensions(SIPP_BASE, n), args.window, work)
                        sipp_runs.append(r)
                    print(
                        f"round {i + 1} {tool:5s}: {r['registered']}/{n} in {r['seconds']:.3f} s = "
                        f"{r['rate_per_s']:.0f} reg/s, {r['cpu_us_per_registration']:.0f} us CPU/reg"
                    )
            aors = pbx.registered_aors(HOST, RPC_PORT)
            results["pbx_check"] = {
                "swarm_aors_in_location": len(set(extensions(SWARM_BASE, n)) & aors),
                "sipp_aors_in_location": len(set(extensions(SIPP_BASE, n)) & aors),
            }
            if args.memory_phones:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--memory-child",
                        str(args.memory_phones),
                        "--window",
                        str(args.window),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                results["memory"] = json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr}
        finally:
            pbx.stop(proc)

    swarm_rate = statistics.median(r["rate_per_s"] for r in swarm_runs)
    sipp_rate = statistics.median(r["rate_per_s"] for r in sipp_runs)
    complete = all(r["registered"] == n for r in swarm_runs + sipp_runs)
    ratio = swarm_rate / sipp_rate if sipp_rate else 0.0
    verdict = "PASS" if complete and ratio >= 0.5 else "MISS"
    results.update(
        {
            "swarm": {"runs": swarm_runs, "median_rate_per_s": swarm_rate, "unit": "registrations/s"},
            "sipp": {"runs": sipp_runs, "median_rate_per_s": sipp_rate, "unit": "registrations/s"},
            "ratio_swarm_to_sipp": round(ratio, 3),
            "target_ratio": 0.5,
            "all_registered": complete,
            "verdict": verdict,
        }
    )
    print(f"swarm median {swarm_rate:.0f} reg/s, SIPp median {sipp_rate:.0f} reg/s, ratio {ratio:.2f}")
    if "memory" in results and "rss_per_phone_bytes" in results["memory"]:
        m = results["memory"]
        print(
            f"memory: {m['registered']}/{m['phones']} phones registered, RSS {m['rss_before_mib']} -> "
            f"{m['rss_after_mib']} MiB ({m['rss_per_phone_bytes']} B/phone), "
            f"idle tasks {m['tasks_while_idle']}"
        )
    print(f"{verdict}: swarm REGISTER rate >= half of SIPp's ({ratio:.2f} x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
