#!/usr/bin/env bash
# Builds afo with the CUDA backend on the GPU machine that the `run` tool
# lends, which has nvcc but neither cJSON nor OpenBLAS: their Debian
# packages travel in the ignored .carry/debs (fetch them here with
#   apt-get download libcjson1 libcjson-dev libopenblas0-pthread libopenblas-dev \
#     libopenblas0 libopenblas-pthread-dev libgfortran5 libpcre2-dev libpcre2-8-0 \
#     libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2
# into .carry/debs and pass carry [".carry"] to `run`).
#
#   tools/device-build.sh [build-dir] [targets...]
#
# Prints the environment to source for running what it built.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cuda}
shift || true
sys=/tmp/afo-sys
if [ ! -f $sys/.done ]; then
    mkdir -p $sys
    for f in .carry/debs/*.deb; do dpkg -x "$f" $sys; done
    touch $sys/.done
fi
lib=$sys/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B "$build" -DAFO_WERROR=ON -DAFO_CUDA=ON -DCJSON_INCLUDE_DIR=$sys/usr/include \
    -DCJSON_LIBRARY=$lib/libcjson.so -DPCRE2_INCLUDE_DIR=$sys/usr/include -DPCRE2_LIBRARY=$lib/libpcre2-8.so \
    -DUTF8PROC_INCLUDE_DIR=$sys/usr/include -DUTF8PROC_LIBRARY=$lib/libutf8proc.so -DCBLAS_INCLUDE_DIR=$sys/usr/include/x86_64-linux-gnu/openblas-pthread \
    -DOPENBLAS_LIBRARY=$lib/openblas-pthread/libopenblas.so >"$build.cmake.log" 2>&1 || { cat "$build.cmake.log"; exit 1; }
if [ $# -gt 0 ]; then
    for t in "$@"; do cmake --build "$build" -j16 --target "$t"; done
else
    cmake --build "$build" -j16
fi
echo "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
