#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 60), one after the other.
# Prints one summary line per target; exits 1 if any target crashed (its reproducer is
# copied to fuzz/crashes/<target>-<hash>), 2 if the build failed.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   (from anywhere)
# Environment: FUZZ_SANITIZER=address|none (default: address, see fuzz/README.md).
set -uo pipefail

seconds="${1:-60}"
shift || true
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
sanitizer="${FUZZ_SANITIZER:-address}"
# Stable Rust: cargo-fuzz passes -Z flags (-Zsanitizer=...); this lets stable rustc take them.
export RUSTC_BOOTSTRAP=1

cd "$root" || exit 2
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "run.sh: no fuzz targets (is cargo-fuzz installed? cargo install cargo-fuzz)" >&2
    exit 2
fi

if ! cargo fuzz build --sanitizer "$sanitizer" >/dev/null 2>"$here/build.log.tmp"; then
    cat "$here/build.log.tmp" >&2
    rm -f "$here/build.log.tmp"
    echo "run.sh: build failed" >&2
    exit 2
fi
rm -f "$here/build.log.tmp"

logs="$here/artifacts/logs"
mkdir -p "$logs" "$here/crashes"
failed=0
printf '%-14s %8s %12s  %s\n' target seconds executions crash
for t in "${targets[@]}"; do
    corpus="$here/corpus/$t"
    seeds="$here/seeds/$t"
    mkdir -p "$corpus" "$here/artifacts/$t"
    start=$(date +%s)
    # The first folder receives new inputs; the seeds are only read.
    cargo fuzz run --sanitizer "$sanitizer" "$t" "$corpus" "$seeds" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        >"$logs/$t.log" 2>&1
    status=$?
    # Seconds spent fuzzing as libFuzzer counts them (the build is not included).
    elapsed=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$logs/$t.log" | tail -n1)
    [ -n "$elapsed" ] || elapsed="$(( $(date +%s) - start ))*"
    # libFuzzer's final stats, else its last status line (#N).
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n1)
    if [ -z "$execs" ]; then
        execs=$(grep -o '^#[0-9]*' "$logs/$t.log" | tail -n1 | tr -d '#')
    fi
    crash=no
    if [ "$status" -ne 0 ]; then
        crash=yes
        failed=1
        for f in "$here/artifacts/$t"/crash-* "$here/artifacts/$t"/oom-* "$here/artifacts/$t"/timeout-* "$here/artifacts/$t"/leak-*; do
            [ -e "$f" ] || continue
            name=$(basename "$f")
            cp "$f" "$here/crashes/$t-${name#*-}"
            crash="yes ($(basename "$f"), log: fuzz/artifacts/logs/$t.log)"
        done
    fi
    printf '%-14s %8s %12s  %s\n' "$t" "$elapsed" "${execs:-?}" "$crash"
done
exit "$failed"
