#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 found on this machine and install bigmali with its dev extra.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/find_python.sh)
echo "using $python ($("$python" --version 2>&1))"
"$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "installed bigmali into .venv"
