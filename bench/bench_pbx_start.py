"""Bench the site PBX with 10,000 extensions: start-up time, a registration storm, and RPC dump times.

Why: a failover moves 1,000+ agents at once, the keeper restarts PBXs during faults, and a CTI polling
the location table pays for ``ul.dump`` each time. Loopback only (127.0.0.1, SIP 25065, RPC 25105).

    .venv/bin/python bench/bench_pbx_start.py [--extensions 10000] [--starts 5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import select
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sipcore import digest, message
from virtual import pbx

HOST = "127.0.0.1"
SIP_PORT = 25065
RPC_PORT = 25105
PHONE_PORT = 25095


def start_once(spec: pbx.PbxSpec) -> tuple[float, float, subprocess.Popen[bytes]]:
    """write_files time and exec-to-OPTIONS-200 time; returns the running process too."""
    t0 = time.monotonic()
    argv = pbx.write_files(spec)
    t1 = time.monotonic()
    with open(spec.log_file, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pbx.wait_ready(HOST, SIP_PORT, 10.0, proc, spec.boot_id)
    return t1 - t0, time.monotonic() - t1, proc


def register_storm(exts: dict[str, str], window: int = 400, timeout: float = 60.0) -> tuple[int, float]:
    """REGISTER every extension from one UDP socket with digest auth, ``window`` transactions in flight.

    Each extension: REGISTER -> 401 -> REGISTER with credentials -> 200, as a phone does. Returns the
    number of 200s and the elapsed seconds.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, PHONE_PORT))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    local = f"{HOST}:{PHONE_PORT}"
    todo = list(exts)
    state: dict[str, tuple[str, int, float, bytes]] = {}  # call-id -> ext, cseq, sent at, bytes
    ok = 0

    def build(ext: str, call_id: str, cseq: int, auth: str | None) -> bytes:
        aor = f"sip:{ext}@{HOST}"
        msg = message.SipMessage(
            f"REGISTER sip:{HOST} SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP {local};branch=z9hG4bK{secrets.token_hex(8)};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<{aor}>;tag={ext}"),
                ("To", f"<{aor}>"),
                ("Call-ID", call_id),
                ("CSeq", f"{cseq} REGISTER"),
                ("Contact", f"<sip:{ext}@{local}>"),
                ("Expires", "3600"),
            ],
        )
        if auth:
            msg.add_header("Authorization", auth)
        return msg.to_bytes()

    t0 = time.monotonic()
    while (todo or state) and time.monotonic() - t0 < timeout:
        while todo and len(state) < window:
            ext = todo.pop()
            call_id = f"bench-{ext}-{secrets.token_hex(4)}"
            data = build(ext, call_id, 1, None)
            state[call_id] = (ext, 1, time.monotonic(), data)
            sock.sendto(data, (HOST, SIP_PORT))
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:
            now = time.monotonic()
            for call_id, (ext, cseq, sent, data) in list(state.items()):
                if now - sent > 1.0:  # retransmit what the storm lost
                    state[call_id] = (ext, cseq, now, data)
                    sock.sendto(data, (HOST, SIP_PORT))
            continue
        raw, _ = sock.recvfrom(65535)
        resp = message.parse(raw)
        call_id = resp.header("Call-ID") or ""
        if call_id not in state:
            continue
        ext, cseq, _, _ = state[call_id]
        if resp.status == 401 and cseq == 1:
            chal = digest.parse_challenge(resp.header("WWW-Authenticate") or "")
            auth = digest.authorization(chal, "REGISTER", f"sip:{HOST}", ext, exts[ext])
            data = build(ext, call_id, 2, auth)
            state[call_id] = (ext, 2, time.monotonic(), data)
            sock.sendto(data, (HOST, SIP_PORT))
        elif resp.status and resp.status >= 200:
            ok += resp.status == 200
            del state[call_id]
    sock.close()
    return ok, time.monotonic() - t0


def timed_rpc(method: str, *params: str, runs: int = 5) -> tuple[float, int]:
    """Median seconds of one RPC over HTTP, and the size of its JSON reply."""
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        res = pbx.jsonrpc(HOST, RPC_PORT, method, *params, timeout=60)
        times.append(time.monotonic() - t0)
    return statistics.median(times), len(json.dumps(res))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extensions", type=int, default=10_000)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--allocator", default="tlsf", choices=["tlsf", "fm", "qm"])
    args = parser.parse_args()
    exts = {str(100000 + i): secrets.token_hex(6) for i in range(args.extensions)}
    with tempfile.TemporaryDirectory(prefix="bench-pbx-") as tmp:
        spec = pbx.PbxSpec(
            "bench", HOST, SIP_PORT, RPC_PORT, "lab", Path(tmp), exts, allocator=args.allocator
        )
        writes, starts = [], []
        for _ in range(args.starts):
            w, s, proc = start_once(spec)
            writes.append(w)
            starts.append(s)
            pbx.stop(proc)
        print(f"extensions                      {len(exts)}  (allocator {args.allocator})")
        print(f"write_files (cfg + HA1 table)   median {statistics.median(writes) * 1000:7.1f} ms")
        print(
            f"exec -> OPTIONS 200             median {statistics.median(starts) * 1000:7.1f} ms"
            f"  (min {min(starts) * 1000:.1f}, max {max(starts) * 1000:.1f}, {args.starts} starts)"
        )
        _, _, proc = start_once(spec)
        try:
            ok, took = register_storm(exts)
            rate = ok / took
            print(f"REGISTER storm (401 + 200 each) {ok}/{len(exts)} ok in {took:.2f} s = {rate:.0f} reg/s")
            for method, params in [("ul.dump", ()), ("ul.dump", ("brief",))]:
                secs, size = timed_rpc(method, *params)
                name = " ".join([method, *params])
                print(f"{name:<31} median {secs * 1000:7.1f} ms  ({size / 1e6:.1f} MB JSON)")
            secs, size = timed_rpc("ul.lookup", "location", next(iter(exts)), runs=50)
            print(f"{'ul.lookup location <ext>':<31} median {secs * 1000:7.1f} ms  ({size} bytes)")
            regs = pbx.statistics(HOST, RPC_PORT, "usrloc:")
            print(f"usrloc:registered_users         {regs.get('usrloc:registered_users')}")
        finally:
            pbx.stop(proc)


if __name__ == "__main__":
    main()
