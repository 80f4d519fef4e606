#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 found on this machine and install bigmali with its dev extra.
# The report test opens pages in headless Chromium: Debian's chromium and chromium-driver are
# installed when missing and apt-get can run (as root); otherwise that test is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/find_python.sh)
echo "using $python ($("$python" --version 2>&1))"
"$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "installed bigmali into .venv"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's chromium and chromium-driver for the report test"
        (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }) ||
            echo "could not install chromium: the browser test will be skipped" >&2
    else
        echo "no chromium/chromedriver here: the browser test will be skipped (apt-get install chromium chromium-driver)" >&2
    fi
fi
