"""The live stream's snapshot format (GET /events/{id}/stream)."""

import re
from typing import Any

_RUN = re.compile(r"([a-z-])(\d*)")
_RUN_STATUS = {"a": "available", "r": "reserved", "b": "booked"}


def snapshot_statuses(snapshot: dict[str, Any]) -> dict[int, str]:
    """Every ticket's status from a snapshot's runs: from id `first` on, a letter and how many
    ids in a row have it (`-`: ids that are not tickets of the event)."""
    statuses: dict[int, str] = {}
    ticket_id = snapshot["first"]
    for letter, digits in _RUN.findall(snapshot["runs"]):
        count = int(digits) if digits else 1
        if letter != "-":
            statuses.update(dict.fromkeys(range(ticket_id, ticket_id + count), _RUN_STATUS[letter]))
        ticket_id += count
    return statuses
