"""Command line for namespaces and shells: an OPTIONS ping or a digest REGISTER, exit 0 on a 200.

python -m sipcore options 198.18.1.10 5060          # prints the status, exit 0 on 200
python -m sipcore register 198.18.1.10 5060 1001 secret
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sipcore.client import register
from sipcore.probe import options_ping


def main(argv: Sequence[str] | None = None, prog: str = "python -m sipcore") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="OPTIONS ping or digest REGISTER; exit 0 on 200")
    sub = parser.add_subparsers(dest="cmd", required=True)
    opt = sub.add_parser("options", help="OPTIONS ping")
    opt.add_argument("host")
    opt.add_argument("port", type=int)
    opt.add_argument("--timeout", type=float, default=1.0)
    opt.add_argument("--source")
    reg = sub.add_parser("register", help="digest REGISTER")
    reg.add_argument("host")
    reg.add_argument("port", type=int)
    reg.add_argument("ext")
    reg.add_argument("password", nargs="?", default=os.environ.get("SIP_PASSWORD", ""))
    reg.add_argument("--realm")
    reg.add_argument("--expires", type=int, default=60)
    reg.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    status: int | None
    if args.cmd == "options":
        status = options_ping(args.host, args.port, args.timeout, args.source)
    else:
        try:
            status = register(
                args.host, args.port, args.ext, args.password, args.realm, args.expires, timeout=args.timeout
            )
        except TimeoutError:
            status = None
    print(status if status is not None else "timeout")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
