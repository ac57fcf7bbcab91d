#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Install what keymap needs to build, test, run and benchmark, from Debian 12 packages only
# (libsodium: request MACs and address-validation cookies; jansson: keymapctl;
# libmicrohttpd: the metrics endpoint; memcached and gnuplot: the
# side-by-side comparison, tools/bench/compare; libfuse3 and fuse3: kmfs, tools/kmfs;
# clang: the libFuzzer targets, tools/fuzz.sh; libcurl, etcd-server and etcd-client: the etcd
# client of the cluster mode, lib/etcd, and its test against a local etcd; libsystemd:
# keymapd's readiness and watchdog notifications, sd_notify;
# chromium: the status page's test in a headless browser, tests/functional/status_page.sh).
set -euo pipefail

pkgs=(build-essential meson ninja-build pkg-config python3 iproute2 procps
	libdpdk-dev dpdk dpdk-dev libisal-dev liburcu-dev libcmocka-dev libxxhash-dev liburing-dev
	libjansson-dev libmicrohttpd-dev libsodium-dev memcached gnuplot-nox libfuse3-dev fuse3 clang
	libcurl4-openssl-dev etcd-server etcd-client libsystemd-dev chromium)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all packages present"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: need root to install: ${missing[*]}" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
