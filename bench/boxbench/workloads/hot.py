"""One hot ticket: hundreds of buyers at a barrier, all asking for the same seat at once."""

import asyncio
import contextlib
import json
import time
from collections import Counter

import httpx

from ..bench import Bench
from ..common import PLAIN_HTTP, ms, percentile, say, table
from ..report import Target


async def run(bench: Bench) -> None:
    plan = bench.plan
    event = await bench.create_event("bench hot ticket", 10)
    ticket = event.first_ticket
    path = f"/events/{event.id}/reservations"
    buyers = plan.hot_buyers
    barrier = asyncio.Barrier(buyers)

    async def buyer(index: int) -> tuple[int | None, float, float]:
        # One connection per buyer, opened before the barrier: the release sends N requests
        # on N ready sockets.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=bench.server.base_url, limits=limits, timeout=30, verify=PLAIN_HTTP
        ) as client:
            with contextlib.suppress(httpx.HTTPError):
                await client.get("/healthz")
            await barrier.wait()
            sent = time.perf_counter()
            try:
                response = await client.post(
                    path, json={"ticket_ids": [ticket], "customer": f"buyer-{index}"}
                )
            except httpx.HTTPError:
                return None, sent, time.perf_counter()
            return response.status_code, sent, time.perf_counter()

    outcomes = await asyncio.gather(*(buyer(i) for i in range(buyers)))
    released = min(sent for _, sent, _ in outcomes)
    statuses = Counter(status for status, _, _ in outcomes)
    winners = sum(n for status, n in statuses.items() if status == 201)
    refused = statuses.get(409, 0)
    server_errors = sum(n for status, n in statuses.items() if status and status >= 500)
    failed = statuses.get(None, 0)
    losers = [(sent, answered) for status, sent, answered in outcomes if status != 201]
    slowest_own = max((a - s for s, a in losers), default=0.0) * 1000
    slowest_release = max((a - released for _, a in losers), default=0.0) * 1000
    loser_own = sorted((a - s) * 1000 for s, a in losers)
    spread = (max(sent for _, sent, _ in outcomes) - released) * 1000
    claims = await bench.conn.fetchval(
        "SELECT count(*) FROM reservation_tickets WHERE ticket_id = $1", ticket
    )
    await bench.invariants(event.id, "hot ticket")
    others = {str(status): n for status, n in statuses.items() if status not in (201, 409, None)}
    bench.report.sections.append(
        "\n".join(
            [
                f"## One hot ticket, {buyers} buyers",
                "",
                f"{buyers} buyers (asyncio + httpx, one connection each, opened beforehand) "
                "wait at a barrier and then all ask for the same ticket at once. Latency "
                "“from release” counts from the moment the first request left the client, "
                "so it includes the client's own time to send them all.",
                "",
                table(
                    [
                        "buyers",
                        "winners (201)",
                        "409",
                        "5xx",
                        "other / transport errors",
                        "holds in the database",
                        "slowest loser, from release",
                        "slowest loser, own request",
                        "median loser",
                        "all sent within",
                    ],
                    [
                        [
                            str(buyers),
                            str(winners),
                            str(refused),
                            str(server_errors),
                            f"{json.dumps(others) if others else 0} / {failed}",
                            str(claims),
                            ms(slowest_release),
                            ms(slowest_own),
                            ms(percentile(loser_own, 0.5)),
                            ms(spread),
                        ]
                    ],
                ),
            ]
        )
    )
    say(
        f"[hot ticket] {winners} winner, {refused}× 409, {server_errors}× 5xx, slowest loser "
        f"{ms(slowest_release)} from release",
    )
    bench.report.targets += [
        Target(
            f"{buyers} buyers on one ticket: exactly one winner",
            f"{winners} winner(s), {claims} hold(s) in the database",
            winners == 1 and claims == 1,
        ),
        Target(
            "… every loser answered 409 within 1 s",
            f"{refused} of {buyers - winners} losers got 409; slowest "
            f"{ms(slowest_release)} from release",
            refused == buyers - winners and slowest_release < 1000,
        ),
        Target("… no 5xx", str(server_errors), server_errors == 0 and failed == 0),
    ]
