"""Lab up and down times of the virtual lab, as `hil lab up` / `hil lab down` take them (wall clock of the
whole command, Python start-up included). Targets: default lab up within 10 s, down within 2 s.

    .venv/bin/python bench/bench_lab.py [--topology F ...] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sysinfo import describe  # noqa: E402

HIL = [sys.executable, "-m", "harness.cli"]
TARGETS = {"virtual-two-site": (10.0, 2.0)}


def timed(args: list[str]) -> float:
    t0 = time.monotonic()
    r = subprocess.run(HIL + args, cwd=ROOT, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"hil {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--topology", action="append", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", dest="json_file")
    args = ap.parse_args()
    info = describe(("kamailio",))  # before the runs: the load average at the start
    topos = args.topology or [
        str(ROOT / "topologies/virtual-two-site.yaml"),
        str(ROOT / "topologies/virtual-10k.yaml"),
    ]
    results = []
    for topo in topos:
        ups, downs = [], []
        for _ in range(args.repeat):
            ups.append(timed(["lab", "up", "--topology", topo]))
            downs.append(timed(["lab", "down"]))
        name = Path(topo).stem
        row = {
            "topology": name,
            "up_s": {"median": round(statistics.median(ups), 3), "max": round(max(ups), 3), "unit": "s"},
            "down_s": {
                "median": round(statistics.median(downs), 3),
                "max": round(max(downs), 3),
                "unit": "s",
            },
        }
        if name in TARGETS:
            up_t, down_t = TARGETS[name]
            row["up_target_s"], row["down_target_s"] = up_t, down_t
            row["up_pass"] = max(ups) <= up_t
            row["down_pass"] = max(downs) <= down_t
        results.append(row)
        verdict = ""
        if "up_pass" in row:
            verdict = (
                f"  up {'PASS' if row['up_pass'] else 'MISS'} (<= {row['up_target_s']} s)"
                f"  down {'PASS' if row['down_pass'] else 'MISS'} (<= {row['down_target_s']} s)"
            )
        print(
            f"{name:<18} up median {row['up_s']['median']:.2f} s max {row['up_s']['max']:.2f} s | "
            f"down median {row['down_s']['median']:.2f} s max {row['down_s']['max']:.2f} s{verdict}"
        )
    doc = {
        "bench": "lab",
        **info,
        "repeat": args.repeat,
        "results": results,
    }
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
