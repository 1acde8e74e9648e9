#!/usr/bin/env bash
# Print the interpreter the Makefile builds .venv with: $PYTHON if set, else python3.13, 3.12,
# 3.11 or python3, the first that is Python 3.11 or newer (snakemake 9, numpy 2.4 and pandas 3
# need it); else "uv" where uv is installed (it brings its own Python). Otherwise one line
# saying what to install, and exit status 1, before anything is installed.
set -u
for py in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
  command -v "$py" >/dev/null 2>&1 || continue
  if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
    command -v "$py"
    exit 0
  fi
done
if command -v uv >/dev/null 2>&1; then
  echo uv
  exit 0
fi
found=$(python3 --version 2>&1 || echo "no python3")
echo "error: dannasep needs Python 3.11 or newer (found: ${found}); install python3.11 and python3.11-venv (Debian/Ubuntu: apt-get install python3.11 python3.11-venv) or uv, then run make again" >&2
exit 1
