#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The unit tests under AddressSanitizer and UndefinedBehaviorSanitizer, in ./build-asan
# (the libraries, the stores, the request path and libkeymap; keymapd itself needs DPDK,
# whose shared libraries are not instrumented). Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build-asan/build.ninja ] ||
	meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Ddpdk=disabled
ninja -C build-asan
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
	meson test -C build-asan --suite unit --print-errorlogs --num-processes 2
