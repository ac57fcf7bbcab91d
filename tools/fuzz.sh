#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Build the libFuzzer targets (tests/fuzz) with clang, coverage instrumentation and
# ASan/UBSan in ./build-fuzz, then run each for SECONDS (default 60) from its seed corpus
# tests/fuzz/corpus/NAME (copied: the tree is not written). A crash, a sanitizer report or
# an abort fails the run and leaves the input in build-fuzz/artifacts/.
# usage: tools/fuzz.sh [SECONDS] [NAME...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
names=("$@")
[ "${#names[@]}" -ne 0 ] || names=(request reply)
command -v clang >/dev/null || { echo "fuzz: needs clang (apt-get install clang)" >&2; exit 1; }
[ -f build-fuzz/build.ninja ] ||
	CC=clang meson setup build-fuzz -Dfuzz=true -Ddpdk=disabled -Dtests=true \
		-Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args=-fsanitize=fuzzer-no-link -Dc_link_args=-fsanitize=fuzzer-no-link
ninja -C build-fuzz tests/fuzz/fuzz_request tests/fuzz/fuzz_reply
mkdir -p build-fuzz/artifacts
for n in "${names[@]}"; do
	work=build-fuzz/corpus-$n
	rm -rf "$work"
	mkdir -p "$work"
	cp tests/fuzz/corpus/"$n"/* "$work"/
	echo "== fuzz_$n for $secs s"
	rc=0
	# fuzz_request keeps a server's state across inputs (keys it stored stay): no per-input
	# leak check for it; its state is freed at exit, before the final one.
	leaks=1
	[ "$n" != request ] || leaks=0
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		build-fuzz/tests/fuzz/fuzz_"$n" -max_total_time="$secs" -max_len=4096 -detect_leaks="$leaks" \
		-artifact_prefix=build-fuzz/artifacts/"$n"- -print_final_stats=1 "$work" \
		>build-fuzz/fuzz-"$n".log 2>&1 || rc=$?
	grep -E "^(stat::number_of_executed_runs|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE)" build-fuzz/fuzz-"$n".log || true
	if [ "$rc" -ne 0 ]; then
		grep -E "ERROR|SUMMARY|#[0-9]+ 0x" build-fuzz/fuzz-"$n".log | head -20 >&2
		echo "fuzz_$n: FAILED (exit $rc; input in build-fuzz/artifacts, log build-fuzz/fuzz-$n.log)" >&2
		exit 1
	fi
done
