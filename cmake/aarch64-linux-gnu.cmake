# Cross toolchain for Debian's gcc-aarch64-linux-gnu:
#   cmake -S . -B build-aarch64 --toolchain cmake/aarch64-linux-gnu.cmake -DAFO_OPENBLAS=OFF
# Target libraries (cJSON) come from Debian multiarch packages such as
# libcjson-dev:arm64, which install into /usr/lib/aarch64-linux-gnu; CMake
# searches there because it detects the compiler's library architecture
# (aarch64-linux-gnu).
# Headers like cjson/cJSON.h are architecture-independent and shared with the
# host package, so no find root path is set.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

# Lets plain `ctest` run the test binaries. The arm64 runtime (loader, glibc,
# libcjson.so.1) is the multiarch one that libcjson1:arm64 pulls in, at its
# usual paths, hence -L /. Not -L /usr/aarch64-linux-gnu: that loader would
# come from libc6-arm64-cross but still pick up libc.so.6 from libc6:arm64 in
# /lib/aarch64-linux-gnu, and that mix of two glibc builds hangs on threads.
set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-aarch64;-L;/")
