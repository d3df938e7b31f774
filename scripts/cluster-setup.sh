#!/usr/bin/env bash
# Setup of the production-shaped topology (`npm run cluster`, `npm run test:cluster`;
# docs/cluster.md): builds the Temporal server, its SQL schema tool and copies the
# PostgreSQL schemas into .cache/temporal-server/ from the Go module proxy, once.
# The dev server of `npm start` needs none of this (scripts/setup.sh covers it).
#
# The server build takes 7-15 minutes and about 1.5 GB of module cache; a second run
# finds both binaries at the pinned version and changes nothing. Delete .cache/temporal-server/ to rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."

# The server version is pinned: deploy/temporal/server.yaml and the schemas follow it,
# and docker-compose.yml runs the images of the same version.
TEMPORAL_SERVER_VERSION="1.32.0"
# The `go` directive of go.temporal.io/server@v1.32.0's go.mod: an older toolchain
# refuses the module (or, with GOTOOLCHAIN=auto, downloads another one silently).
GO_MIN_VERSION="1.26.8"
CACHE=".cache/temporal-server"
say() { printf '[cluster-setup] %s\n' "$*"; }
fail() { printf '[cluster-setup] ERROR: %s\n' "$*" >&2; exit 1; }

bash scripts/setup.sh

# Each binary reports its version; the schemas carry a stamp.
built() { [ -x "$CACHE/$1" ] && "$CACHE/$1" --version 2>/dev/null | grep -q " version $TEMPORAL_SERVER_VERSION\$"; }
stamp="$CACHE/schema/.version"
if built temporal-server && built temporal-sql-tool && [ "$(cat "$stamp" 2>/dev/null)" = "$TEMPORAL_SERVER_VERSION" ]; then
  say "Temporal server $TEMPORAL_SERVER_VERSION ready in $CACHE"
  exit 0
fi

# --- the Go toolchain ---------------------------------------------------------
command -v go >/dev/null 2>&1 || fail "the Go toolchain is missing: the Temporal server $TEMPORAL_SERVER_VERSION is built from source and needs go >= $GO_MIN_VERSION (https://go.dev/dl/, or your package manager). Then run this again."
have="$(go env GOVERSION | sed 's/^go//')"
# sort -V puts the older version first: if that is ours and it differs, ours is too old.
if [ "$have" != "$GO_MIN_VERSION" ] && [ "$(printf '%s\n%s\n' "$have" "$GO_MIN_VERSION" | sort -V | head -1)" = "$have" ]; then
  fail "go $have is too old: go.temporal.io/server@v$TEMPORAL_SERVER_VERSION needs go >= $GO_MIN_VERSION (https://go.dev/dl/). Then run this again."
fi
# Never let the go command fetch another toolchain behind our back.
export GOTOOLCHAIN=local
mkdir -p "$CACHE"
build_dir="$(mktemp -d)"
trap 'rm -rf "$build_dir"' EXIT

# --- the server and the schema tool -------------------------------------------
module="go.temporal.io/server"
if ! built temporal-server; then
  say "building the Temporal server $TEMPORAL_SERVER_VERSION with go $have (once; 7-15 minutes, ~200 MB binary)"
  started=$SECONDS
  GOBIN="$build_dir" go install "$module/cmd/server@v$TEMPORAL_SERVER_VERSION" \
    || fail "go install $module/cmd/server@v$TEMPORAL_SERVER_VERSION failed (output above)"
  mv "$build_dir/server" "$CACHE/temporal-server"
  say "built $CACHE/temporal-server in $((SECONDS - started)) s"
fi
if ! built temporal-sql-tool; then
  say "building temporal-sql-tool $TEMPORAL_SERVER_VERSION (the schema tool; about a minute)"
  GOBIN="$build_dir" go install "$module/cmd/tools/sql@v$TEMPORAL_SERVER_VERSION" \
    || fail "go install $module/cmd/tools/sql@v$TEMPORAL_SERVER_VERSION failed (output above)"
  mv "$build_dir/sql" "$CACHE/temporal-sql-tool"
fi

# --- the PostgreSQL schemas (the module ships them; the admin-tools image has the same tree) ---
module_dir="$(go mod download -json "$module@v$TEMPORAL_SERVER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$module_dir/schema/postgresql/v12/temporal" ] || fail "no PostgreSQL schemas under $module_dir/schema/postgresql/v12"
rm -rf "$CACHE/schema"
cp -R "$module_dir/schema/postgresql/v12" "$CACHE/schema"
chmod -R u+w "$CACHE/schema" # the module cache is read-only
echo "$TEMPORAL_SERVER_VERSION" > "$stamp"
say "Temporal server $TEMPORAL_SERVER_VERSION ready in $CACHE"
