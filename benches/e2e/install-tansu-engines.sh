#!/usr/bin/env bash
# Installs a Tansu broker built with its storage engines (memory, SQLite via libSQL, PostgreSQL)
# for the latency benchmark (benches/e2e_latency.rs), once, into a cached location:
# ${KEYSCORE_TOOLS:-$HOME/.cache/keyscore/tools}-engines. Later runs reuse the binary when its
# version matches. The test suite does not use this build (tests/tools/install-tansu.sh installs
# the memory-only one); it takes about 20 minutes to compile on two cores.
#
# The PostgreSQL engine does not create its tables: it expects the schema of Tansu's repository
# (etc/initdb.d/010-schema.sql at the release's tag) to have been applied. The crate does not ship
# that file, so this script puts a copy next to the binary, in
# share/tansu/postgres-schema-$version.sql, taken from the first of:
#   TANSU_PG_SCHEMA   a path to that file (e.g. from a checkout of the release's tag);
#   TANSU_SOURCE      a git checkout of Tansu's repository holding the tag v$version;
#   a download of the file at the tag v$version from Tansu's repository (needs curl).
# Without it the memory and SQLite engines still work; the bench refuses the PostgreSQL engine
# and says so.
#
# Prints the binary's path on stdout.
set -euo pipefail
root="${KEYSCORE_TOOLS:-$HOME/.cache/keyscore/tools}-engines"
version="${TANSU_VERSION:-0.6.0}"
features="dynostore,postgres,libsql"
bin="$root/bin/tansu"
schema="$root/share/tansu/postgres-schema-$version.sql"

if ! { [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qw "$version"; }; then
  mkdir -p "$root"
  echo "install-tansu-engines: building tansu $version with --features $features (about 20 minutes)" >&2
  cargo install tansu --version "$version" --locked --features "$features" --root "$root" >&2
fi

if [ ! -s "$schema" ]; then
  mkdir -p "$(dirname "$schema")"
  tmp="$(mktemp)"
  trap 'rm -f "$tmp"' EXIT
  if [ -n "${TANSU_PG_SCHEMA:-}" ]; then
    cp "$TANSU_PG_SCHEMA" "$tmp"
  elif [ -n "${TANSU_SOURCE:-}" ]; then
    git -C "$TANSU_SOURCE" show "v$version:etc/initdb.d/010-schema.sql" >"$tmp"
  elif command -v curl >/dev/null &&
    curl -fsSL --max-time 30 -o "$tmp" \
      "https://raw.githubusercontent.com/tansu-io/tansu/v$version/etc/initdb.d/010-schema.sql"; then
    :
  else
    : >"$tmp"
  fi
  if grep -qi "create table if not exists record" "$tmp"; then
    mv "$tmp" "$schema"
    echo "install-tansu-engines: PostgreSQL schema for tansu $version in $schema" >&2
  else
    rm -f "$tmp"
    echo "install-tansu-engines: no PostgreSQL schema for tansu $version (set TANSU_PG_SCHEMA to" \
      "etc/initdb.d/010-schema.sql of its release, or TANSU_SOURCE to a checkout); the postgres" \
      "engine will not be usable" >&2
  fi
fi
echo "$bin"
