#!/bin/sh
# Run every lib9 fuzz target for a while: fuzz/run.sh [seconds per target, default 30]
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer=address, the sancov
# passes). With only a stable toolchain, RUSTC_BOOTSTRAP=1 makes rustc and cargo
# accept them anyway; with a nightly toolchain it is harmless.
#
# Install the tool once with `cargo install cargo-fuzz`. Each target starts from the
# hand-made inputs in fuzz/seeds/<target>/ (a valid encoding of every message type,
# stat entries, dial strings) plus what earlier runs kept in fuzz/corpus/<target>/;
# new inputs go to the latter and findings to fuzz/artifacts/<target>/ (both ignored
# by git). Reproduce a finding with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-...
set -eu

secs=${1:-30}
cd "$(dirname "$0")/.."   # lib9, where cargo fuzz looks for fuzz/

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
	cargo fuzz run "$t" "fuzz/corpus/$t" $seeds -- -max_total_time="$secs"
done
