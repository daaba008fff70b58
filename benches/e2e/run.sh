#!/usr/bin/env bash
# Runs the end-to-end benchmark (benches/e2e_kafka.rs) with release builds: Tansu on loopback,
# the passthrough ceiling, `keyscore serve` with each model kind, the Python baseline and the
# paced latency run with a hot swap. Prints a markdown table; arguments go to the bench
# (`benches/e2e/run.sh --help`), e.g. `--records 200000 --latency-seconds 10` for a quick look.
#
# Environment:
#   KEYSCORE_TOOLS           where tools are installed (default ~/.cache/keyscore/tools)
#   KEYSCORE_BENCH_PYTHON    Python with confluent-kafka, scikit-learn and numpy; default: a
#                            virtualenv created in $KEYSCORE_TOOLS/bench-venv. Set it to an empty
#                            string to skip the Python baseline.
set -euo pipefail
cd "$(dirname "$0")/../.."

export KEYSCORE_TOOLS="${KEYSCORE_TOOLS:-$HOME/.cache/keyscore/tools}"
KEYSCORE_TANSU="$(bash tests/tools/install-tansu.sh)"
export KEYSCORE_TANSU

if [ -z "${KEYSCORE_BENCH_PYTHON+set}" ]; then
  venv="$KEYSCORE_TOOLS/bench-venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check confluent-kafka scikit-learn numpy
  export KEYSCORE_BENCH_PYTHON="$venv/bin/python"
fi
if [ -z "$KEYSCORE_BENCH_PYTHON" ]; then
  unset KEYSCORE_BENCH_PYTHON
fi

cargo bench --bench e2e_kafka -- "$@"
