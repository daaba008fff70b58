#!/usr/bin/env bash
# Installs the Tansu Kafka-compatible broker used by the end-to-end tests, once, into a cached
# location ($KEYSCORE_TOOLS, default ~/.cache/keyscore/tools). Later runs reuse the binary.
# The `dynostore` feature is required: without it Tansu refuses its default memory:// storage.
set -euo pipefail
root="${KEYSCORE_TOOLS:-$HOME/.cache/keyscore/tools}"
version="${TANSU_VERSION:-0.6.0}"
bin="$root/bin/tansu"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "$bin"
  exit 0
fi
mkdir -p "$root"
cargo install tansu --version "$version" --locked --features dynostore --root "$root" >&2
echo "$bin"
