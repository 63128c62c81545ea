#!/usr/bin/env bash
# deploy/nats/install.sh — builds the pinned nats-server and nats CLI (deploy/nats/versions.env) from their Go
# modules into BIN (default: /usr/local/bin when writable, else ~/.local/bin). Quick when they are already there:
# a binary that reports the pinned version is kept. Needs Go and its module proxy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
bin=${BIN:-}
if [ -z "$bin" ]; then
  if [ -w /usr/local/bin ]; then bin=/usr/local/bin; else bin="$HOME/.local/bin"; fi
fi
mkdir -p "$bin"

have() { [ -x "$bin/$1" ] && "$bin/$1" "$2" 2>&1 | grep -q -- "${3#v}"; }

if have nats-server --version "$NATS_SERVER_VERSION"; then
  echo "nats-server $NATS_SERVER_VERSION already in $bin"
else
  command -v go >/dev/null || { echo "install.sh: Go is needed to build nats-server $NATS_SERVER_VERSION (https://go.dev/dl/)" >&2; exit 1; }
  echo "building nats-server $NATS_SERVER_VERSION into $bin"
  GOBIN="$bin" go install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION"
fi
if have nats --version "$NATS_CLI_VERSION"; then
  echo "nats CLI $NATS_CLI_VERSION already in $bin"
else
  command -v go >/dev/null || { echo "install.sh: Go is needed to build the nats CLI $NATS_CLI_VERSION" >&2; exit 1; }
  echo "building nats CLI $NATS_CLI_VERSION into $bin"
  GOBIN="$bin" go install "github.com/nats-io/natscli/nats@$NATS_CLI_VERSION"
fi
"$bin/nats-server" --version
"$bin/nats" --version
