"""Failover of N agents on the virtual lab: detection, recovery per agent, throughput, CPU and memory.

    .venv/bin/python bench/bench_failover.py --agents 1000 --fault pbx-kill --json reports/bench/f.json
    hil bench failover --agents 1000 --fault pbx-kill --json reports/bench/f.json      (the same)

Run it in a network namespace of its own (only one virtual lab fits in a namespace)::

    unshare --net sh -c 'ip link set lo up; HIL_RUN_DIR=/tmp/hil-bench .venv/bin/hil bench failover ...'

What it does, judging only from outside the stack (DESIGN.md: the PBX, the CTI and the wire):

1. Brings up the topology for N agents (100: virtual-two-site, 1,000: virtual-1k, 10,000: virtual-10k) and
   waits until every agent is registered at its home PBX (Kamailio ``ul.dump`` over JSON-RPC) and logged in,
   linked and ``ready`` at its home CTI (the CTI ``sessions`` query). One sha agent in ``--not-ready-every``
   is then set ``not_ready`` through the swarm's admin API (what the agent does on the softphone), so the
   bench can check that each agent comes back in its earlier state, whatever it was.
2. Steady state: CPU and memory of every service over ``--steady`` seconds (the swarm targets of issue 3:
   1,000 agents under half a core, 10,000 agents in 1.5 GiB).
3. Starts tcpdump on the switch ports of both PBXs (SIP) and of ntg's UL (HTTP), then injects the fault at
   sha (home of half the agents) through harness.faults (bench/failover_faults.py: the PBX or the CTI
   killed, its switch port shut, paused with SIGSTOP, or blackholed with its link up). The fault time is
   when it showed (bench/failover_faults.py says how, per kind).
4. Polls ntg's CTI until every sha agent is logged in there, linked, in its earlier state (or timeout),
   stops the capture and works out, per agent:
   - registered at ntg's PBX: the first 200 OK to a REGISTER of its extension from ntg's PBX (capture);
   - logged in at ntg's CTI in its earlier state: the CTI's ``login_at`` and ``since`` of the session;
   - recovery time = the later of the two, minus the fault time;
   - detection = its first ``POST /v1/login`` at ntg's UL (capture), minus the fault time: the client logs
     in elsewhere only once its secondary confirmation says the break is real, so this is detection plus
     confirmation. ``detection_s`` is the first agent's, ``detection_all_s`` every agent's (p50, max).
   The agents of ntg must not move: ``false_moves`` counts those no longer at ntg's CTI at the end.
5. CPU seconds (utime+stime from /proc/<pid>/stat, whole process tree, so Kamailio's workers count) and
   peak memory (the highest sampled sum of PSS over the tree, and VmHWM of the main process) per service
   over the failover window; a PNG of recovered agents over time; a JSON file with every figure, its unit
   and PASS/MISS per target.

Timers are the stack's defaults (stack/agent/state.py ``Timers``; the CTI's PBX liveness probe 0.5 s x 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.failover_faults import FAULTS, FaultClock  # noqa: E402
from bench.failover_figures import Outcome, agent_figures, cost_figures, fig, plot, verdict  # noqa: E402
from bench.failover_lab import (  # noqa: E402
    cti_sessions,
    pbx_extensions,
    say,
    set_not_ready,
    start_captures,
    ul_admission,
    wait_online,
)
from bench.failover_procs import PROFILED, MemSampler, Services, py_spy, status_kib  # noqa: E402
from bench.sysinfo import describe  # noqa: E402
from harness import faults  # noqa: E402
from harness import topology as topology_mod  # noqa: E402
from harness.drivers import Steps  # noqa: E402
from harness.lab import Lab  # noqa: E402
from harness.lab.session import close_lab, open_lab  # noqa: E402
from harness.observe import ObserveError  # noqa: E402
from stack.agent.state import Timers  # noqa: E402
from stack.swarm import parse as swarm_args  # noqa: E402

TOPOLOGIES = {
    100: "topologies/virtual-two-site.yaml",
    1000: "topologies/virtual-1k.yaml",
    10000: "topologies/virtual-10k.yaml",
}
# Recovery targets of issue 6 (seconds from a PBX kill until every agent is recovered), by agent count.
RECOVERY_TARGET_S = {1000: 6.0, 10000: 20.0}
SWARM_CPU_TARGET_CORES = 0.5  # 1,000 agents at steady state
SWARM_MEM_TARGET_MIB = 1536.0  # 10,000 agents
# ---- the run -------------------------------------------------------------------------------------------


def timers_note(sw: argparse.Namespace) -> dict[str, Any]:
    """The timers the run used: the agent client's defaults (the swarm runs them), the CTI's PBX probe, and
    the swarm's login pacing (none by default: the receiving UL's admission control paces a storm)."""
    pacing = "none (UL admission control)"
    if sw.rate > 0:
        pacing = f"{sw.rate:.0f}/s (burst {sw.burst:.0f}) per site"
    return {
        "agent": asdict(Timers()),
        "cti_pbx_probe": "every 0.5 s, down after 2 failures",
        "swarm_pacing": pacing,
    }


def bring_up(lab: Lab, args: argparse.Namespace, figures: dict[str, Any]) -> tuple[dict[str, str], list[Any]]:
    """Every agent online; one sha agent in ``--not-ready-every`` set not_ready. Returns each agent's site
    and the sha agents."""
    all_agents = lab.topology.agents()
    online_s, where = wait_online(lab, all_agents, args.online_timeout)
    away = sorted(a.id for a in all_agents if where[a.id] != a.home)
    figures["all_online_after_lab_up_s"] = fig(
        online_s, "s", note="every agent registered + logged in + ready"
    )
    figures["agents_online_away_from_home"] = fig(
        len(away), "agents", sample=away[:10], note="logged in at the other site at start (design step 6)"
    )
    say(f"all {len(all_agents)} agents online ({online_s:.1f} s after lab up; {len(away)} away from home)")
    return where, [a for a in all_agents if where[a.id] == "sha"]


def set_earlier_states(lab: Lab, sha: list[Any], every: int) -> dict[str, str]:
    """The state each sha agent must come back in: one in ``every`` set not_ready, the rest ready."""
    earlier = {a.id: "ready" for a in sha}
    if not every:
        return earlier
    # only the swarm's agents: those on desk phones and softphones are not held by its admin API
    nr = [a.id for i, a in enumerate(sha) if i % every == 0 and lab.topology.phone_of(a) == (None, None)]
    home = {a.id: a.home for a in sha}
    for site in sorted(set(home.values())):  # each agent's own swarm runs on its home site's host
        set_not_ready(lab, site, [aid for aid in nr if home[aid] == site])
    for aid in nr:
        earlier[aid] = "not_ready"
    sess = cti_sessions(lab, "sha")
    bad = [aid for aid in nr if sess.get(aid, {}).get("state") != "not_ready"]
    if bad:
        raise SystemExit(f"error: {len(bad)} agents did not go not_ready at sha's CTI")
    say(f"{len(nr)} sha agents set not_ready (the rest stay ready)")
    return earlier


def steady_state(
    svc: Services, args: argparse.Namespace, figures: dict[str, Any], targets: dict[str, Any], out_dir: Path
) -> None:
    """CPU and memory of every service over ``--steady`` seconds before the fault."""
    svc.refresh()
    if args.profile:
        py_spy(svc, PROFILED, args.steady, out_dir / "profile", f"steady-{args.agents}-{args.fault}")
    c0, w0 = svc.cpu(), time.monotonic()
    time.sleep(args.steady)
    c1, w1 = svc.cpu(), time.monotonic()
    pss = svc.pss()
    steady = {k: round((c1[k] - c0[k]) / (w1 - w0), 3) for k in c1 if k in c0}
    swarm_keys = [k for k in steady if k.endswith("/hil-swarm")]
    swarm_cores = sum(steady[k] for k in swarm_keys)
    swarm_mib = sum(pss[k] for k in swarm_keys)
    swarm_hwm = sum((status_kib(svc.main[k], "VmHWM") or 0) / 1024 for k in swarm_keys)
    figures["steady_cpu_cores"] = fig(steady, "cores", window_s=round(w1 - w0, 1))
    figures["steady_swarm_cpu_cores"] = fig(swarm_cores, "cores", agents=args.agents, swarms=len(swarm_keys))
    figures["steady_swarm_pss"] = fig(round(swarm_mib, 1), "MiB", agents=args.agents)
    figures["swarm_peak_rss_since_start"] = fig(
        round(swarm_hwm, 1), "MiB", agents=args.agents, note="sum of VmHWM of the site swarms"
    )
    say(
        f"steady state: swarms {swarm_cores:.3f} cores, PSS {swarm_mib:.0f} MiB, peak RSS {swarm_hwm:.0f} MiB"
    )
    if args.agents == 1000:
        targets["swarm_1000_agents_steady_cpu"] = {
            "target": f"< {SWARM_CPU_TARGET_CORES} core",
            "value": round(swarm_cores, 3),
            "unit": "cores",
            "verdict": verdict(swarm_cores, SWARM_CPU_TARGET_CORES),
        }
    if args.agents == 10000:
        targets["swarm_10000_agents_memory"] = {
            "target": f"< {SWARM_MEM_TARGET_MIB:.0f} MiB",
            "value": round(swarm_hwm, 1),
            "unit": "MiB",
            "verdict": verdict(swarm_hwm, SWARM_MEM_TARGET_MIB),
            "note": "peak RSS (VmHWM) of the two site swarms together, login storm included",
        }


def fault_window(
    lab: Lab, svc: Services, args: argparse.Namespace, earlier: dict[str, str], figures: dict[str, Any]
) -> Outcome:
    """Inject the fault at sha, poll ntg's CTI until every sha agent is back in its earlier state (or the
    timeout), read the end state, stop the captures; the fault is healed on the way out."""
    spec = FAULTS[args.fault]
    device = lab.topology.of_kind(spec.role, "sha")[0].name
    pid = svc.main.get(f"{device}/{spec.params.get('service', '')}")
    clock = FaultClock(lab, spec, pid, device)
    injector = faults.Injector(lab, out=say, steps=Steps(sinks=[clock.on_step]))
    fault = injector.make(spec.kind, device, **spec.params)
    out_dir = Path(args.out_dir)
    caps = start_captures(lab, out_dir / "pcap", source_of=device if spec.clock == "filter" else None)
    mem = MemSampler(svc)
    mem.start()
    spies = (
        py_spy(svc, PROFILED, args.profile, out_dir / "profile", f"failover-{args.agents}-{args.fault}")
        if args.profile
        else []
    )
    o = Outcome(cpu_before=svc.cpu())
    clock.start()
    t_send = time.time()
    say(f"injecting {spec.kind} on {device} {spec.params or ''}")
    with injector.fault(fault, duration=args.timeout + 120):
        t_injected = time.time()
        clock.join(timeout=10)
        o.t_fault = clock.t or t_send
        figures["fault_inject_command_s"] = fig(
            t_injected - t_send, "s", note="SSH/CLI command until the fault showed and was checked"
        )
        say(f"fault showed {o.t_fault - t_send:.3f} s after the command; waiting for recovery")
        deadline = o.t_fault + args.timeout
        while time.time() < deadline:
            try:
                sess = cti_sessions(lab, "ntg", timeout=5.0)
            except ObserveError:
                time.sleep(0.5)
                continue
            for aid, want in earlier.items():
                s = sess.get(aid)
                if s and s.get("linked") and s.get("state") == want and s.get("login_at", 0) >= o.t_fault:
                    o.recovered_cti[aid] = max(float(s["login_at"]), float(s.get("since", 0)))
                else:
                    o.recovered_cti.pop(aid, None)
            say(f"  {len(o.recovered_cti)}/{len(earlier)} at ntg's CTI ({time.time() - o.t_fault:.1f} s)")
            if len(o.recovered_cti) == len(earlier):
                break
            time.sleep(args.poll)
        o.t_end = time.time()
        o.cpu_after = svc.cpu()
        svc.refresh()
        o.peak = mem.stop()
        o.ntg_regs = pbx_extensions(lab, "ntg", timeout=10.0)
        o.ntg_sessions = cti_sessions(lab, "ntg", timeout=10.0)
        say("stopping captures")
        o.results = {k: c.stop() for k, c in caps.items()}
    say("fault healed")
    for p in spies:
        p.wait()
    if spec.clock == "filter":
        clock.refine(o.results["source"].pcap_path)
        o.t_fault = clock.t or o.t_fault
    figures["fault_time"] = fig(
        round(o.t_fault - t_send, 3), "s after the command was sent", how=clock.how,
        uncertainty_s=round(clock.uncertainty, 3),
    )  # fmt: skip
    return o


def floors(
    figures: dict[str, Any],
    detection: float,
    n: int,
    sw: argparse.Namespace,
    admission: dict[str, Any] | None,
    times: list[float],
) -> None:
    """In-run yardsticks: no failover can beat detection plus the time the receiving site needs to admit
    every agent at the rate it takes. measured / floor says how much the rest of the chain (and any idle
    capacity the admission left) adds, and it compares across runs on a noisy machine better than seconds.

    The receiving site's capacity is the admission control's own measure at saturation: the logins per
    second ntg's UL admitted while some waited (``capacity_per_s``). A site that never deferred anyone was
    not saturated: its floor is then the last agent's detection (nobody was held back)."""
    done = len(times) == n
    if sw.rate > 0:  # the optional client ceiling (off by default)
        floor = detection + max(0.0, n - sw.burst) / sw.rate
        figures["pacing_floor_s"] = fig(
            floor, "s", how=f"detection + (agents - {sw.burst:.0f}) / {sw.rate:.0f} per s"
        )
        if done:
            figures["recovery_max_over_floor"] = fig(times[-1] / floor, "ratio")
    capacity = (admission or {}).get("capacity_per_s")
    last = figures.get("detection_all_s", {}).get("value") or {}
    if capacity:
        floor = detection + n / float(capacity)
        how = f"detection + agents / {capacity} admitted logins per s (ntg's UL at saturation)"
    elif last.get("max") is not None:
        floor = float(last["max"])
        how = "the last agent's detection (ntg's UL never saturated: nobody deferred)"
    else:
        return
    figures["capacity_floor_s"] = fig(floor, "s", how=how, capacity_per_s=capacity)
    if done:
        figures["recovery_max_over_capacity_floor"] = fig(times[-1] / floor, "ratio", target=1.2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    topo_file = args.topology or str(ROOT / TOPOLOGIES[args.agents])
    topo = topology_mod.load(topo_file)
    swarm_agents = [a for a in topo.agents() if topo.phone_of(a) == (None, None)]  # desk/soft phones aside
    if len(swarm_agents) != args.agents:
        raise SystemExit(f"error: {topo_file} has {len(swarm_agents)} swarm agents, not {args.agents}")
    doc: dict[str, Any] = {"bench": "failover", **describe(("kamailio", "tcpdump"))}
    sw = swarm_args(["--topology", "x", "--site", "sha"])
    doc["setup"] = {
        "agents": args.agents,
        "fault": args.fault,
        "fault_spec": asdict(FAULTS[args.fault]),
        "faulted_site": "sha",
        "topology": str(
            Path(topo_file).relative_to(ROOT) if Path(topo_file).is_relative_to(ROOT) else topo_file
        ),
        "timers": timers_note(sw),
        "not_ready_every": args.not_ready_every,
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    doc["figures"], doc["targets"] = figures, targets
    t_up = time.monotonic()
    lab = open_lab(topo)
    say(f"lab {topo.name} up in {time.monotonic() - t_up:.1f} s (owned={lab.owned})")
    try:
        svc = Services(lab)
        where, sha = bring_up(lab, args, figures)
        earlier = set_earlier_states(lab, sha, args.not_ready_every)
        steady_state(svc, args, figures, targets, out_dir)
        o = fault_window(lab, svc, args, earlier, figures)
        n = len(sha)
        times, detection = agent_figures(lab, o, sha, where, sw.burst if sw.rate > 0 else n, doc)
        admission = ul_admission(lab, "ntg")
        figures["ntg_ul_admission"] = fig(admission, "view", how="ntg's UL /v1/health admission at the end")
        if times and detection is not None:
            floors(figures, detection, n, sw, admission, times)
        cost_figures(svc, o, figures)
        target = RECOVERY_TARGET_S.get(args.agents)
        if target is not None and args.fault == "pbx-kill":
            worst = times[-1] if len(times) == n else None
            targets[f"recovery_{args.agents}_agents_pbx_kill"] = {
                "target": f"every agent recovered within {target:.0f} s",
                "value": round(worst, 3) if worst else None,
                "unit": "s",
                "recovered": f"{len(times)}/{n}",
                "verdict": verdict(worst, target),
            }
        png = Path(args.png or out_dir / f"failover-{args.agents}-{args.fault}.png")
        title = f"{args.agents} agents, {args.fault} at sha: {len(times)}/{n} recovered"
        plot(png, times, detection, title, target)
        doc["png"] = str(png)
        doc["recovered_curve"] = [[round(t, 3), i + 1] for i, t in enumerate(times)][
            :: max(1, len(times) // 200)
        ]
    finally:
        if args.keep_lab:
            say("lab left up (--keep-lab)")
        else:
            close_lab(lab)
    return doc


def summary(doc: dict[str, Any]) -> None:
    f, m = doc["figures"], doc["machine"]
    print()
    print(
        f"failover bench: {doc['setup']['agents']} agents, {doc['setup']['fault']} at sha "
        f"({m['cores']} cores, {m['memory_gib']} GiB, load {m['loadavg_at_start']})"
    )
    for k in (
        "pacing_floor_s",
        "recovery_max_over_floor",
        "capacity_floor_s",
        "recovery_max_over_capacity_floor",
        "agents_faulted",
        "agents_recovered",
        "fault_time",
        "detection_s",
        "detection_all_s",
        "false_moves",
        "first_register_at_ntg_s",
        "recovery_s",
        "recovered_per_s",
        "steady_swarm_cpu_cores",
        "swarm_peak_rss_since_start",
    ):
        if k in f:
            print(f"  {k:<30} {f[k]['value']} {f[k]['unit']}")
    print(f"  {'cpu_seconds_during_failover':<30} {f['cpu_seconds_during_failover']['value']}")
    print(f"  {'peak_pss_during_failover':<30} {f['peak_pss_during_failover']['value']}")
    for name, t in doc["targets"].items():
        print(f"  {t['verdict']:<4} {name}: {t['value']} {t['unit']} (target {t['target']})")
    print(f"  plot: {doc.get('png')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, choices=sorted(TOPOLOGIES), default=100)
    ap.add_argument("--fault", choices=sorted(FAULTS), default="pbx-kill")
    ap.add_argument("--topology", default=None, help="override the topology for --agents")
    ap.add_argument("--json", dest="json_file", default=None)
    ap.add_argument("--png", default=None)
    ap.add_argument("--out-dir", default=str(ROOT / "reports" / "bench"))
    ap.add_argument("--timeout", type=float, default=None, help="seconds to wait for recovery")
    ap.add_argument("--online-timeout", type=float, default=None)
    ap.add_argument("--steady", type=float, default=10.0, help="seconds of steady-state CPU measurement")
    ap.add_argument(
        "--poll",
        type=float,
        default=None,
        help="seconds between CTI polls during recovery (default 0.5, 2 at 10,000 agents: a sessions "
        "reply of 10,000 sessions costs the CTI being measured; the times come from the CTI's "
        "own login_at/since, so the poll rate does not change them)",
    )
    ap.add_argument(
        "--not-ready-every", type=int, default=10, help="1 sha agent in N starts not_ready (0: none)"
    )
    ap.add_argument("--keep-lab", action="store_true")
    ap.add_argument(
        "--profile",
        type=float,
        default=0.0,
        help="py-spy the swarms, CTIs and ntg's UL for this many seconds from the fault (and the steady "
        "window)",
    )
    args = ap.parse_args(argv)
    args.timeout = args.timeout or max(30.0, args.agents / 50)
    args.poll = args.poll or max(0.5, args.agents / 5000)
    args.online_timeout = args.online_timeout or max(60.0, args.agents / 20)
    doc = run(args)
    summary(doc)
    if args.json_file:
        Path(args.json_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_file).write_text(json.dumps(doc, indent=1, default=str))
        print(f"  json: {args.json_file}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
