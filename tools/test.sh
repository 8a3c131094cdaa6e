#!/usr/bin/env bash
# Configures, builds and runs the test suite; safe to re-run.
#
#   tools/test.sh [extra cmake args...]
#
# Environment:
#   AFO_BUILD_DIR   build directory, relative to the repo root (default: build)
#   AFO_CMAKE_ARGS  extra cmake args, split on spaces (use positional args
#                   for values that contain spaces)
# Extra args come after -DAFO_WERROR=ON, so they can override it.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${AFO_BUILD_DIR:-build}
# shellcheck disable=SC2086 # AFO_CMAKE_ARGS is deliberately word-split
cmake -S . -B "$build_dir" -DAFO_WERROR=ON ${AFO_CMAKE_ARGS:-} "$@"
cmake --build "$build_dir" -j2
cd "$build_dir"
ctest --output-on-failure --no-tests=error
