#!/bin/sh
# Run every rc fuzz target for a while: fuzz/run.sh [seconds per target, default 60]
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer=address, the sancov
# passes). With only a stable toolchain, RUSTC_BOOTSTRAP=1 makes rustc and cargo
# accept them anyway; with a nightly toolchain it is harmless.
#
# Install the tool once with `cargo install cargo-fuzz`. Each target starts from the
# hand-made rc snippets in fuzz/seeds/<target>/ (every construct of the language, and
# some syntax errors) plus what earlier runs kept in fuzz/corpus/<target>/; new inputs
# go to the latter and findings to fuzz/artifacts/<target>/ (both ignored by git).
# Reproduce a finding with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-...
#
# Extra arguments after the seconds go to libFuzzer; for example, to go on past
# findings and collect them all:
#   fuzz/run.sh 300 -fork=2 -ignore_crashes=1 -ignore_timeouts=1
set -eu

secs=${1:-60}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.."   # rc, where cargo fuzz looks for fuzz/

export RUSTC_BOOTSTRAP=1
cargo fuzz build
for t in $(cargo fuzz list); do
	echo "== $t: ${secs}s"
	mkdir -p "fuzz/corpus/$t"
	seeds=
	if [ -d "fuzz/seeds/$t" ]; then
		seeds="fuzz/seeds/$t"
	fi
	# $seeds is unquoted on purpose: no seed directory, no argument.
	cargo fuzz run "$t" "fuzz/corpus/$t" $seeds -- -max_total_time="$secs" -timeout=10 "$@"
done
