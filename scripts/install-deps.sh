#!/usr/bin/env bash
# Installs what `make test` and `make demo` need and a fresh Debian/Ubuntu
# machine may lack. Safe to run again: it installs only what is missing.
# BENCH=1 also installs the side-by-side benchmark peers.
set -euo pipefail

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
# `make test` runs the race detector, which needs cgo: a C compiler and
# the C library's headers.
command -v gcc >/dev/null || need+=(gcc)
[[ -e /usr/include/stdlib.h ]] || need+=(libc6-dev)
# The commands `switchyard demo --keep` suggests use curl.
command -v curl >/dev/null || need+=(curl)
if [[ "${BENCH:-0}" == 1 ]]; then
	command -v wrk >/dev/null || need+=(wrk)
	command -v iperf3 >/dev/null || need+=(iperf3)
	command -v haproxy >/dev/null || need+=(haproxy)
fi
if ((${#need[@]})); then
	if [[ $(id -u) != 0 ]]; then
		echo "install-deps: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
		exit 1
	fi
	echo "install-deps: installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v go >/dev/null; then
	echo "install-deps: Go is not installed; install Go 1.26.8 or newer from https://go.dev/dl/" >&2
	exit 1
fi
if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
	if [[ $(id -u) == 0 ]]; then
		mount -t bpf bpf /sys/fs/bpf
	fi
fi
