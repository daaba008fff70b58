#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (the Tansu broker,
# Chromium, promtool, Python clients and scikit-learn in a virtualenv), then checks formatting and lints and runs
# every test. Installed tools are cached in $KEYSCORE_TOOLS (default ~/.cache/keyscore/tools),
# so later runs skip the installs.
#
# Environment:
#   KEYSCORE_TOOLS           where tools are installed (default ~/.cache/keyscore/tools)
#   KEYSCORE_TEST_CQL_URL    also run the CQL store conformance suite against this real
#                            ScyllaDB/Cassandra (e.g. cql://10.0.0.5:9042/keyscore_test)
set -euo pipefail
cd "$(dirname "$0")/.."

export KEYSCORE_TOOLS="${KEYSCORE_TOOLS:-$HOME/.cache/keyscore/tools}"
mkdir -p "$KEYSCORE_TOOLS"
step() { printf '\n==> %s\n' "$*"; }

step "Installing the Tansu broker (cached after the first run)"
KEYSCORE_TANSU="$(bash tests/tools/install-tansu.sh)"
export KEYSCORE_TANSU

step "Installing Chromium (status page test) and promtool (metrics test) from Debian"
missing=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

step "Installing Python test dependencies into a virtualenv (cached)"
venv="$KEYSCORE_TOOLS/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
"$venv/bin/pip" install --quiet --disable-pip-version-check ./python
export KEYSCORE_PYTHON="$venv/bin/python"
export KEYSCORE_PYTHON_BIN="$venv/bin"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked -- --nocapture

step "Python tests"
"$venv/bin/python" -m pytest -q python/tests

step "All tests passed."
