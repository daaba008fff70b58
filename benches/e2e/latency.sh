#!/usr/bin/env bash
# Runs the latency benchmark (benches/e2e_latency.rs) with release builds: per Tansu storage
# engine and offered rate, the broker alone (one hop), the passthrough (two hops) and
# `keyscore serve` with a 128-64-64-1 MLP, latency corrected for coordinated omission, per 30 s
# slice, with a hot swap. Prints markdown tables; arguments go to the bench
# (`benches/e2e/latency.sh --help`), e.g. `--engine sqlite --rate 1000 --seconds 20` for a
# quick look. See benches/e2e/README.md.
#
# Environment:
#   KEYSCORE_TOOLS   where tools are installed (default ~/.cache/keyscore/tools); the Tansu
#                    build with storage engines goes to $KEYSCORE_TOOLS-engines (installed on
#                    first use by install-tansu-engines.sh: about 20 minutes)
#   KEYSCORE_BIN     the keyscore binary to run (default: the one cargo builds for the bench)
#   KEYSCORE_PG_BIN  PostgreSQL's bin directory, for the postgres engine (default: found)
set -euo pipefail
cd "$(dirname "$0")/../.."

export KEYSCORE_TOOLS="${KEYSCORE_TOOLS:-$HOME/.cache/keyscore/tools}"
KEYSCORE_TANSU="$(bash benches/e2e/install-tansu-engines.sh)"
export KEYSCORE_TANSU

cargo bench --bench e2e_latency -- "$@"
