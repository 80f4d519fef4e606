#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter, or fail. Looks on PATH, then in pyenv.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
for cand in "${BIGMALI_PYTHON:-}" python3.12 python3.13 python3.14 python3 python; do
    [ -n "$cand" ] || continue
    path=$(command -v "$cand" 2>/dev/null) || continue
    if ok "$path"; then echo "$path"; exit 0; fi
done
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for path in $(ls -d "$root"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V); do
    if ok "$path"; then echo "$path"; exit 0; fi
done
echo "no Python >= 3.12 found (set BIGMALI_PYTHON to one)" >&2
exit 1
