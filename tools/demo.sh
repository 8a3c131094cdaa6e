#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (build dependencies), builds afo, and runs
# the main job: text generation with the demo model shipped in the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs="cmake build-essential libopenblas-dev libcjson-dev libpcre2-dev libutf8proc-dev"
missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
    sudo=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
./build/afo generate --prompt "${1:-KING RICHARD III:}" --max-tokens 120 --temp 0.8 --seed 7
