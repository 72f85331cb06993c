#!/usr/bin/env bash
# Where a forwarding path spends its time, by line of the BPF C source: runs
# one BenchmarkDatapath path (default new-flow) through BPF_PROG_TEST_RUN,
# samples the whole machine with perf (cpu-clock: this VM has no PMU) while
# it runs, and attributes the samples in the JITed program to its source
# lines (scripts/jitprof). Root; needs perf (apt-get install linux-perf).
# Run it on a quiet machine: other load only dilutes the samples.
#   scripts/profile.sh [new-flow|established|non-vip] [seconds]
set -euo pipefail
path=${1:-new-flow}
secs=${2:-6}
command -v perf >/dev/null || { echo "profile.sh: perf not found: apt-get install linux-perf" >&2; exit 1; }
work=$(mktemp -d /tmp/switchyard-profile-XXXXXX)
bench=
cleanup() {
	if [ -n "$bench" ]; then
		kill "$bench" 2>/dev/null || true
		wait "$bench" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
echo "== building the benchmark and jitprof"
go test -c -o "$work/datapath.test" ./pkg/datapath/
go build -o "$work/jitprof" ./scripts/jitprof
echo "== running $path (BPF_PROG_TEST_RUN) and sampling for ${secs}s"
# Enough packets to outlast the sampling: the benchmark stops by itself.
"$work/datapath.test" -test.run='^$' -test.bench="^BenchmarkDatapath\$/^$path\$" \
	-test.benchtime=2000000000x >"$work/bench.out" 2>&1 &
bench=$!
# The program is loaded once the benchmark's world is built.
"$work/jitprof" -perf "" -wait 30s
perf record -q -o "$work/perf.data" -a -e cpu-clock -F 20000 -- sleep "$secs"
"$work/jitprof" -perf "$work/perf.data"
