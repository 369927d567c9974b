"""Placeholder: the outbox sender (being written)."""

import asyncio

from boxoffice.config import Settings
from boxoffice.db import Database


async def run_outbox_sender(db: Database, settings: Settings) -> None:
    await asyncio.Event().wait()
