#!/bin/sh
# Installs the peer, llama.cpp as npm's node-llama-cpp (prebuilt CPU binaries
# for linux-x64), into .peer/ at the repository root (git-ignored). Exits 0
# with a message, installing nothing, when node/npm or the registry is
# unreachable: the comparison is then skipped, not failed.
set -eu
VERSION=3.21.1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${AFO_PEER_DIR:-$ROOT/.peer}

if [ -f "$DIR/node_modules/node-llama-cpp/package.json" ] &&
    grep -q "\"version\": \"$VERSION\"" "$DIR/node_modules/node-llama-cpp/package.json"; then
    echo "peer: node-llama-cpp $VERSION already in $DIR"
    exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "peer: skipped: node and npm are not installed (Debian: apt-get install nodejs npm)"
    exit 0
fi
if ! npm view "node-llama-cpp@$VERSION" version >/dev/null 2>&1; then
    echo "peer: skipped: the npm registry is unreachable, cannot install node-llama-cpp@$VERSION"
    exit 0
fi
mkdir -p "$DIR"
cd "$DIR"
[ -f package.json ] || echo '{"name": "afo-peer", "private": true}' >package.json
# The prebuilt binaries come as optional dependencies; its postinstall (which
# may try to build from source) is not needed for the CPU libraries.
npm install --no-audit --no-fund --ignore-scripts "node-llama-cpp@$VERSION"
echo "peer: node-llama-cpp $VERSION installed in $DIR"
