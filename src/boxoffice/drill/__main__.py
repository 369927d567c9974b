"""`python -m boxoffice.drill NAME`: run a drill, print its JSON verdict as the last line, and
exit 1 on a violation (2 if the drill could not run)."""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from boxoffice.drill.cluster import ClusterError
from boxoffice.drill.run import DRILLS, FAULTS, drill


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/drill", description=__doc__)
    parser.add_argument("name", choices=sorted(DRILLS))
    parser.add_argument(
        "--phases",
        help="comma-separated faults instead of the drill's own "
        f"({', '.join(FAULTS)}); e.g. --phases postmaster",
    )
    parser.add_argument("--repeat", type=int, default=1, help="run the phases this many times")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="workers per API host")
    args = parser.parse_args()
    if args.repeat < 1 or args.clients < 1 or args.workers < 1:
        parser.error("--repeat, --clients and --workers take a positive number")
    phases = args.phases.split(",") if args.phases else None
    unknown = [fault for fault in phases or [] if fault not in FAULTS]
    if unknown:
        parser.error(f"unknown phase(s) {unknown}: choose from {', '.join(FAULTS)}")

    def say(message: str) -> None:
        print(f"drill {args.name}: {message}", file=sys.stderr, flush=True)

    if os.geteuid() != 0:
        print(json.dumps({"drill": args.name, "ok": False, "error": "drills need root"}))
        return 2
    # The nodes run as `postgres`, who must be able to reach their folder.
    base = Path(tempfile.mkdtemp(prefix="boxoffice-drill-"))
    base.chmod(0o755)
    try:
        verdict = asyncio.run(
            drill(
                args.name,
                phases=phases,
                repeat=args.repeat,
                clients=args.clients,
                workers=args.workers,
                directory=base / "ha",
                say=say,
            )
        )
    except ClusterError as error:
        print(json.dumps({"drill": args.name, "ok": False, "error": str(error)}))
        return 2
    finally:
        # deploy/ha/down removed the cluster's folder; ours goes too (whatever is left in it).
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(verdict))
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
