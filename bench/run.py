#!/usr/bin/env python3
"""boxoffice benchmarks: every workload in one command, figures into bench/RESULTS.md.

    .venv/bin/python bench/run.py             # full run (~4 min), private embedded PostgreSQL
    .venv/bin/python bench/run.py --quick     # smoke run (~2 min)
    .venv/bin/python bench/run.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

It starts `boxoffice serve --workers 2` itself, creates its events through the admin API, runs
pgbench with the exact SQL of a reservation (imported from the service, not copied) and the
HTTP load right after it against the same database server, each without and with an
Idempotency-Key, and writes bench/RESULTS.md. The code is the package bench/boxbench/;
bench/README.md says what each workload measures.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boxbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
