"""SQL fragments shared by every read of ticket state.

An expired hold counts as available the moment its expiry passes, whether or not the
sweeper has flipped the row yet; every read goes through these so none can disagree.
"""

# `t` must be the tickets alias in the query that embeds these.
EFFECTIVE_STATUS = (
    "CASE WHEN t.status = 'reserved' AND t.hold_expires_at <= now()"
    " THEN 'available'::ticket_status ELSE t.status END"
)
IS_AVAILABLE = "(t.status = 'available' OR (t.status = 'reserved' AND t.hold_expires_at <= now()))"
IS_HELD = "(t.status = 'reserved' AND t.hold_expires_at > now())"

STATUS_COUNTS = (
    f"count(*) FILTER (WHERE {IS_AVAILABLE}) AS available,"
    f" count(*) FILTER (WHERE {IS_HELD}) AS reserved,"
    " count(*) FILTER (WHERE t.status = 'booked') AS booked"
)

TICKET_COLUMNS = (
    "t.id, t.event_id, t.label, t.section, t.row_label, t.seat, t.price_minor, "
    f"{EFFECTIVE_STATUS} AS status"
)
