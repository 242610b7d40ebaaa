"""Run one emulated IP phone with its vendor management API (the virtual lab's sha-phone1 / ntg-phone1).

    python -m stack.phone --extension 19001 --password-env PHONE_SIP_PW --registrar 198.18.1.10:5060 \\
        --sip-bind 198.18.1.50:5060 --api-bind 198.19.0.16:80 --vendor yealink \\
        --api-user admin --api-password-env LAB_PHONE_PASSWORD

Secrets come only from the named environment variables, never from argv, and are never logged. Events
(registered, incoming call, ...) are logged one JSON object per line on stderr. SIGTERM or SIGINT
unregisters (bounded wait) and exits 0. The phone keeps retrying when the PBX is not there yet, as a
real phone does, so start order in the lab does not matter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from aiohttp import web

from stack.common.addr import hostport
from stack.common.daemon import secret_from_env, until_signalled
from stack.common.loop import run_main
from stack.phone.api import default_facts, make_app
from stack.phone.ua import Phone, PhoneEvent, SipEndpoint, SipTimers

log = logging.getLogger("stack.phone.main")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m stack.phone", description=__doc__.split("\n")[0])
    ap.add_argument("--extension", required=True)
    ap.add_argument("--password-env", required=True, help="env var holding the SIP password")
    ap.add_argument("--registrar", required=True, type=hostport, help="SIP server HOST:PORT")
    ap.add_argument("--sip-bind", required=True, type=hostport, help="local SIP ADDR:PORT (UDP)")
    ap.add_argument("--api-bind", required=True, type=hostport, help="management API ADDR:PORT (HTTP)")
    ap.add_argument("--vendor", required=True, choices=("yealink", "poly"))
    ap.add_argument("--api-user", required=True)
    ap.add_argument("--api-password-env", required=True, help="env var holding the API password")
    ap.add_argument("--expires", type=int, default=300)
    ap.add_argument(
        "--auto-answer", default="1.0", help="seconds from ringing to answer, or 'off' to never answer"
    )
    ap.add_argument("--busy", action="store_true", help="reject every incoming call with 486")
    ap.add_argument("--model", help="model the API reports (default per vendor)")
    ap.add_argument("--firmware", help="firmware the API reports (default per vendor)")
    ap.add_argument("--t1", type=float, default=0.5, help="SIP timer T1 in seconds")
    ap.add_argument("--log-level", default="INFO")
    return ap.parse_args(argv)


def _secret(var: str, what: str) -> str:
    return secret_from_env(var, status=1, message=f"{what}: environment variable {{var}} is not set or empty")


def _log_event(ev: PhoneEvent) -> None:
    detail = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ev.detail.items()}
    log.info(json.dumps({"event": ev.kind, "ext": ev.extension, "mono": round(ev.ts, 6), **detail}))


async def run(args: argparse.Namespace) -> int:
    sip_password = _secret(args.password_env, "SIP password")
    api_password = _secret(args.api_password_env, "API password")
    auto_answer = None if str(args.auto_answer).lower() in ("off", "none", "no") else float(args.auto_answer)
    t1 = args.t1
    timers = SipTimers(t1=t1, t2=8 * t1, timer_f=64 * t1)
    endpoint = await SipEndpoint.open(args.sip_bind[0], args.sip_bind[1], timers=timers)
    phone = Phone(
        endpoint,
        args.extension,
        sip_password,
        args.registrar,
        args.expires,
        on_event=_log_event,
        auto_answer=auto_answer,
        busy=args.busy,
    )
    facts = default_facts(args.vendor, args.extension)
    if args.model or args.firmware:
        from dataclasses import replace

        facts = replace(facts, model=args.model or facts.model, firmware=args.firmware or facts.firmware)
    app = make_app(args.vendor, phone, args.api_user, api_password, facts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.api_bind[0], args.api_bind[1])
    await site.start()
    log.info(
        json.dumps(
            {
                "event": "started",
                "ext": args.extension,
                "vendor": args.vendor,
                "sip": list(endpoint.local),
                "api": list(args.api_bind),
                "registrar": list(args.registrar),
            }
        )
    )

    endpoint.spawn(phone.register())  # failures are retried by the phone itself
    await until_signalled()

    log.info(json.dumps({"event": "stopping", "ext": args.extension}))
    try:
        await asyncio.wait_for(phone.unregister(), timeout=max(2.0, 8 * t1))
    except TimeoutError:
        log.warning(json.dumps({"event": "unregister_timeout", "ext": args.extension}))
    await runner.cleanup()
    phone.close()
    endpoint.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(message)s")
    return run_main(run(args))


if __name__ == "__main__":
    sys.exit(main())
