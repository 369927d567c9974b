"""The options of `boxoffice simulate onsale`, declared on the `simulate` parser (standard
library only: the parser is built for every `boxoffice` command)."""

import argparse

ONSALE = "onsale"

DEFAULT_BUYERS = 1_000
DEFAULT_TICKETS = 200
DEFAULT_PRE_QUEUE_SHARE = 0.1
DEFAULT_ADMIT_PER_MINUTE = 60_000
DEFAULT_CAP = 4
DEFAULT_CONCURRENCY = 256
DEFAULT_STREAMS = 50
DEFAULT_OPENS_IN = 2.0
DEFAULT_SCALPER_SECONDS = 20.0
DEFAULT_SCALPER_TICKETS = 50
DEFAULT_SCALPER_NAMES = 3
DEFAULT_SCALPER_HOLD_SECONDS = 4

# dest → the flag, for the options only `onsale` takes.
ONSALE_ONLY = {
    "tickets": "--tickets",
    "pre_queue_share": "--pre-queue-share",
    "admit_per_minute": "--admit-per-minute",
    "cap": "--cap",
    "streams": "--streams",
    "opens_in": "--opens-in",
    "scalper": "--scalper/--no-scalper",
    "scalper_seconds": "--scalper-seconds",
    "scalper_tickets": "--scalper-tickets",
    "scalper_names": "--scalper-names",
    "scalper_hold_seconds": "--scalper-hold-seconds",
    "scalper_off_url": "--scalper-off-url",
    "max_seconds": "--max-seconds",
    "fail_on_missed_targets": "--fail-on-missed-targets",
}
# dest → the flag, for the other scenarios' options `onsale` has no use for.
NOT_FOR_ONSALE = {
    "requests": "--requests",
    "duration": "--duration",
    "seats_per_hold": "--seats-per-hold",
    "pool": "--pool",
    "layout": "--layout",
    "hold_seconds": "--hold-seconds",
    "idempotency_keys": "--idempotency-keys",
    "plot": "--plot",
    "no_invariants": "--no-invariants",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The onsale options, in a group of their own on `simulate`'s parser."""
    group = parser.add_argument_group(
        "onsale",
        "`boxoffice simulate onsale`: a queued on-sale (waiting room, pre-queue, cap per "
        "customer) rushed by --buyers, then fairness, admission rate, latency and integrity "
        "figures; a scalper runs the release/re-hold attack alongside",
    )
    group.add_argument("--tickets", type=int, help=f"seats on sale (default {DEFAULT_TICKETS})")
    group.add_argument(
        "--pre-queue-share",
        type=float,
        help="share of the buyers who join before sales open and get a random place "
        f"(default {DEFAULT_PRE_QUEUE_SHARE})",
    )
    group.add_argument(
        "--admit-per-minute",
        type=int,
        help=f"the waiting room's admission rate (default {DEFAULT_ADMIT_PER_MINUTE})",
    )
    group.add_argument(
        "--cap",
        type=int,
        help=f"max_tickets_per_customer (default {DEFAULT_CAP}; 0: no cap)",
    )
    group.add_argument(
        "--streams",
        type=int,
        help="buyers who follow their place over Server-Sent Events; the others poll it "
        f"(default {DEFAULT_STREAMS})",
    )
    group.add_argument(
        "--opens-in",
        type=float,
        help="sales open this many seconds (database clock) after the pre-queue has joined "
        f"(default {DEFAULT_OPENS_IN:g})",
    )
    group.add_argument(
        "--scalper",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the release/re-hold attack and a real buyer beside it, with protections on "
        "(alongside the rush) and off (after it) (default: on)",
    )
    group.add_argument(
        "--scalper-seconds",
        type=float,
        help=f"how long each attack runs (default {DEFAULT_SCALPER_SECONDS:g})",
    )
    group.add_argument(
        "--scalper-tickets",
        type=int,
        help=f"seats of the attacked event (default {DEFAULT_SCALPER_TICKETS})",
    )
    group.add_argument(
        "--scalper-names",
        type=int,
        help=f"customer names the scalper uses (default {DEFAULT_SCALPER_NAMES})",
    )
    group.add_argument(
        "--scalper-hold-seconds",
        type=int,
        help=f"hold length of the attacked event (default {DEFAULT_SCALPER_HOLD_SECONDS})",
    )
    group.add_argument(
        "--scalper-off-url",
        help="with --url: a server on the same database with its rate limits off, for the "
        "attack without protections (the private server starts one itself)",
    )
    group.add_argument(
        "--max-seconds",
        type=float,
        help="give up on buyers still waiting this long after the opening (default: from "
        "the buyers and the rate)",
    )
    group.add_argument(
        "--fail-on-missed-targets",
        action="store_true",
        default=None,
        help="also exit 1 when a latency target is missed (reservation p99 < 100 ms)",
    )


def stray_flags(args: argparse.Namespace) -> list[str]:
    """Flags given that do not go with the chosen scenario."""
    wrong = NOT_FOR_ONSALE if args.scenario == ONSALE else ONSALE_ONLY
    return [flag for dest, flag in wrong.items() if getattr(args, dest, None) not in (None, False)]
