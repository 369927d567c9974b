"""The `boxoffice` command: serve · migrate · seed · sweep · simulate."""

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import unquote, urlsplit, urlunsplit

from boxoffice.config import Settings, get_settings
from boxoffice.credentials import admin_token
from boxoffice.supervision import Stopped, stop_on_signals


class DatabaseUnusable(Exception):
    """The configured database cannot be used; the message says which setting and why."""


def _masked(url: str) -> str:
    """The URL with its password (in the user part or a `password=` parameter) hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unreadable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostinfo = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostinfo}"
    query = "&".join(
        f"{field.split('=', 1)[0]}=***" if field.lower().startswith("password=") else field
        for field in parts.query.split("&")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _passwords(url: str, settings: Settings) -> set[str]:
    """Every spelling of a password the URL or the settings hold, to keep out of messages."""
    found = {settings.postgres_password or ""}
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is not None:
        userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
        if ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
        for field in parts.query.split("&"):
            if field.lower().startswith("password="):
                found.add(field.split("=", 1)[1])
    found |= {unquote(password) for password in found}
    return {password for password in found if password}


def _database_setting(settings: Settings) -> tuple[str, str]:
    """Where the database URL came from (DATABASE_URL, or the POSTGRES_* variables), and
    which setting to unset for the embedded PostgreSQL."""
    if settings.postgres_host:
        rebuilt = Settings.model_validate({**settings.model_dump(), "database_url": None})
        if rebuilt.database_url == settings.database_url:
            names = "POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB"
            return names, "POSTGRES_HOST"
    return "DATABASE_URL", "DATABASE_URL"


def _cause(error: BaseException) -> str:
    """One line on why connecting failed, from the innermost error."""
    for _ in range(20):  # a chain is short; never loop on a cyclic one
        inner = error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    if isinstance(error, socket.gaierror):
        return f"the host name does not resolve ({error.strerror})"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused: no PostgreSQL listens there"
    if isinstance(error, TimeoutError):
        return "no answer in time: is the host reachable and PostgreSQL running?"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__


def _check_database(settings: Settings) -> None:
    """Connect once, the way the service does, so a bad setting is one clear message."""
    from boxoffice.db import Database

    url = settings.database_url
    assert url is not None

    async def connect() -> None:
        db = Database(settings, size=1)
        try:
            await db.fetchval("SELECT 1")
        finally:
            await db.close()

    try:
        asyncio.run(connect())
    except Exception as error:
        cause = _cause(error).replace(url, _masked(url))
        for password in _passwords(url, settings):
            cause = cause.replace(password, "***")
        setting, to_unset = _database_setting(settings)
        raise DatabaseUnusable(
            f"boxoffice: cannot use the database in {setting} ({_masked(url)}):\n"
            f"boxoffice: {cause}\n"
            f"boxoffice: fix that, or unset {to_unset} to use the embedded PostgreSQL"
        ) from None


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database URL, or a private embedded server for as long as we run."""
    if settings.database_url is not None:
        _check_database(settings)
        yield settings.database_url
        return
    from boxoffice.embedded import embedded_postgres

    # A stop signal must unwind to the `with` below, which stops the server.
    stop_on_signals()
    print(f"boxoffice: no DATABASE_URL, starting the embedded PostgreSQL in {settings.data_dir}/")
    with embedded_postgres(settings.data_dir) as url:
        # So other tools (`boxoffice simulate --database-url`, psql) can find the running server.
        (settings.data_dir / "database_url").write_text(url + "\n")
        yield url


async def _seed(url: str, settings: Settings, *, force: bool = False) -> int:
    from boxoffice.db import Database
    from boxoffice.seed import seed_demo

    # Two connections: one holds the seed's lock while the other does the work.
    db = Database(settings, url=url, size=2)
    try:
        return await seed_demo(db, hold_seconds=settings.hold_seconds, force=force)
    finally:
        await db.close()


def _migrate(url: str, settings: Settings) -> str:
    """Migrate as the schema owner and give the service role its rights; return the URL the
    service connects with.

    Embedded: the server is ours, so its superuser migrates and creates `boxoffice_app`, a
    role that may only read and write rows, for the workers. External: MIGRATE_DATABASE_URL
    (when set) migrates and grants DATABASE_URL's user the same rights (README, "An external
    PostgreSQL"); without it DATABASE_URL does everything, as before.
    """
    from boxoffice.migrate import upgrade
    from boxoffice.roles import APP_ROLE, grant_row_rights, url_user, with_user

    if settings.database_url is None:
        upgrade(url)
        asyncio.run(grant_row_rights(url, APP_ROLE, create=True))
        return with_user(url, APP_ROLE)
    owner_url = settings.migrate_database_url
    upgrade(owner_url or url)
    service_user = url_user(url)
    if owner_url and service_user and service_user != url_user(owner_url):
        asyncio.run(grant_row_rights(owner_url, service_user))
    return url


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    # Stopped by a signal, everything cleaned up on the way out: a normal end.
    with suppress(Stopped, KeyboardInterrupt):
        _serve(args, settings)
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from boxoffice.server import uvicorn_options
    from boxoffice.supervision import metrics_folder, supervise_workers

    # SIGTERM and SIGHUP unwind to the `finally`s that stop the embedded database and remove
    # the metrics folder; the workers stop with this process, also if it is killed with -9.
    stop_on_signals()
    supervise_workers()
    with database(settings) as url:
        service_url = _migrate(url, settings)
        created = asyncio.run(_seed(url, settings))
        if created:
            print(f"boxoffice: seeded {created} demo events")
        # Workers are fresh processes: they read the database and token from the environment.
        os.environ["DATABASE_URL"] = service_url
        os.environ["ADMIN_TOKEN"] = admin_token(settings)
        get_settings.cache_clear()
        print(f"boxoffice: serving on http://{args.host}:{args.port} (docs at /docs)", flush=True)
        # The workers' metrics meet in a folder of this serve's own, set before any worker
        # imports prometheus_client; /metrics from any worker then reports the sum.
        with metrics_folder(settings.data_dir) as metrics_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            uvicorn.run(
                "boxoffice.main:create_app",
                factory=True,
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_level=args.log_level,
                **uvicorn_options(settings),
            )


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings) as url:
        _migrate(url, settings)
    print("boxoffice: database is at the latest migration")
    return 0


async def _seed_original_demo(url: str, settings: Settings) -> str:
    from boxoffice.db import Database
    from boxoffice.seed import seed_original_demo

    db = Database(settings, url=url)
    try:
        result = await seed_original_demo(db, hold_seconds=settings.hold_seconds)
    finally:
        await db.close()
    return (
        f"boxoffice: the original demo's data is in place ({result.created_tickets} tickets "
        f"created, {result.reset_tickets} put back on sale; all ten are available)"
    )


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings) as url:
        _migrate(url, settings)
        if args.demo_data:
            print(asyncio.run(_seed_original_demo(url, settings)))
            return 0
        created = asyncio.run(_seed(url, settings, force=args.force))
    print(
        f"boxoffice: seeded {created} demo events"
        if created
        else "boxoffice: events exist; nothing seeded (use --force to add the demo events anyway)"
    )
    return 0


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from boxoffice.db import Database
    from boxoffice.expiry import sweep_all

    async def sweep(url: str) -> None:
        db = Database(settings, url=url)
        try:
            result = await sweep_all(db, batch_size=settings.sweep_batch_size)
        finally:
            await db.close()
        print(
            f"boxoffice: freed {result.tickets_freed} tickets, "
            f"marked {result.reservations_expired} holds expired"
        )

    with database(settings) as url:
        asyncio.run(sweep(url))
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: rich, httpx and the simulator load only for this command, and only the
    # `simulate` extra installs them (the Docker image ships without the simulator at all).
    from boxoffice.simulate.onsale_args import ONSALE, stray_flags

    if stray := stray_flags(args):
        print(
            f"boxoffice simulate: {', '.join(stray)} do(es) not go with `simulate {args.scenario}`",
            file=sys.stderr,
        )
        return 2
    try:
        from boxoffice.simulate.onsale import main as simulate_onsale
        from boxoffice.simulate.runner import main as simulate
    except ModuleNotFoundError as missing:
        name = missing.name or ""
        if name.partition(".")[0] not in {"httpx", "rich"} and not name.startswith(
            "boxoffice.simulate"
        ):
            raise
        print(
            f"boxoffice simulate: {missing.name} is not installed: install boxoffice[simulate] "
            "(in a checkout: scripts/bootstrap.sh simulate)",
            file=sys.stderr,
        )
        return 2

    if args.scenario == ONSALE:
        return simulate_onsale(args, settings)
    return simulate(args, settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boxoffice", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (embedded database by default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(handler=cmd_migrate)

    seed = commands.add_parser("seed", help="add the demo events to an empty database")
    seed.add_argument("--force", action="store_true", help="add them even if events exist")
    seed.add_argument(
        "--demo-data",
        action="store_true",
        help="(re)create the original demo's two events and ten tickets, all on sale again; "
        "touches nothing else",
    )
    seed.set_defaults(handler=cmd_seed)

    sweep = commands.add_parser("sweep", help="free every expired hold now")
    sweep.set_defaults(handler=cmd_sweep)

    simulate = commands.add_parser(
        "simulate",
        help="many buyers at once against a server: a verdict, and the invariants checked",
        description="Create an event of its own, send many buyers at it, check the invariants "
        "on the database, and print a verdict. Exit 0 OK, 1 FAIL (an invariant broken, a 5xx, "
        "a ticket sold twice...), 2 cannot run.",
    )
    simulate.add_argument(
        "scenario",
        choices=["one-ticket", "overlap", "best-available", "mixed", "onsale"],
        help="one-ticket: N buyers, one seat · overlap: random multi-seat picks from a small "
        "pool · best-available: N buyers of --quantity · mixed: reserve, then pay, release "
        "or let expire · onsale: a queued on-sale (waiting room, pre-queue, cap) and a "
        "scalper, with fairness and rate figures (options below)",
    )
    simulate.add_argument(
        "--url", help="a running server (default: start a private one on an embedded database)"
    )
    simulate.add_argument(
        "--database-url", help="the server's database, for the invariants (default DATABASE_URL)"
    )
    simulate.add_argument("--admin-token", help="to create the run's event (default ADMIN_TOKEN)")
    simulate.add_argument("--buyers", type=int, help="buyers (default 100; onsale 1000)")
    simulate.add_argument(
        "--concurrency", type=int, help="requests in flight (one-ticket: all buyers; else 32)"
    )
    simulate.add_argument("--requests", type=int, help="stop new buyers after this many requests")
    simulate.add_argument("--duration", type=float, help="stop new buyers after these seconds")
    simulate.add_argument(
        "--seats-per-hold",
        "--quantity",
        dest="seats_per_hold",
        type=int,
        help="seats per hold: the most a buyer picks (overlap, mixed), or exactly (best-available)",
    )
    simulate.add_argument("--pool", type=int, help="tickets in the run's event")
    simulate.add_argument("--layout", choices=["seated", "ga"], help="seated or general admission")
    simulate.add_argument("--hold-seconds", type=int, help="hold length (mixed 2, else 600)")
    simulate.add_argument("--seed", type=int, help="replay the same buyers' choices")
    simulate.add_argument("--timeout", type=float, default=30.0, help="seconds per request (30)")
    simulate.add_argument(
        "--no-invariants", action="store_true", help="do not check the database (no exit 1 for it)"
    )
    simulate.add_argument(
        "--idempotency-keys",
        action="store_true",
        help="send a fresh Idempotency-Key with every reservation (the web page's path)",
    )
    simulate.add_argument("--json", action="store_true", help="one JSON object, no table")
    simulate.add_argument("--plot", metavar="FILE.png", help="latency and throughput charts")
    from boxoffice.simulate.onsale_args import add_arguments as add_onsale_arguments

    add_onsale_arguments(simulate)
    simulate.set_defaults(handler=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValueError as error:
        print(f"boxoffice: bad configuration: {error}", file=sys.stderr)
        return 2
    handler = args.handler
    try:
        return int(handler(args, settings))
    except DatabaseUnusable as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
