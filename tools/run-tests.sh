#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# README command 2 (and CI): install dependencies, build, run every test.
# Functional tests need root: they create a network namespace and a tap device.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh
meson test -C build --print-errorlogs --num-processes 2 "$@"
# The unit tests again under ASan and UBSan, then each fuzz target for 60 s (a few
# minutes: builds of their own).
if [ "$#" -eq 0 ]; then
	tools/sanitize.sh
	tools/fuzz.sh 60
fi
