"""Live availability: ticket changes from PostgreSQL's LISTEN/NOTIFY, streamed as SSE."""
