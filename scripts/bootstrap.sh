# Sourced by scripts/serve and scripts/test: make .venv with the project installed, once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "boxoffice needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
# Reinstall when pyproject.toml changed since the last install.
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
    echo "boxoffice: installing into .venv (first run takes a minute)..." >&2
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
    touch .venv/.installed
fi
