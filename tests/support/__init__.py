"""Helpers the test modules share (fixtures stay in tests/conftest.py).

One module per topic: `problems` (problem+json answers, bearer headers), `expiry` (a hold's
expiry moved into the past on the database clock), `metrics` (the /metrics text format),
`simulate` (`boxoffice simulate` in this process), `stream` (live-stream snapshots),
`embedded` (`boxoffice serve` on its private PostgreSQL) and `system` (which tests are the
slow, process-starting layer: the `system` marker).
"""
