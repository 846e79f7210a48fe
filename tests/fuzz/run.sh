#!/bin/sh
# run.sh SECONDS [BUILD_DIR] — the libFuzzer targets of a -Dfuzz=true build (default build-fuzz),
# from the source root: for each target, replays every input under tests/fuzz/crashes/<target>/
# (no fuzzing; each input found a defect, and each must now pass), then fuzzes for SECONDS from
# tests/fuzz/corpus/<target>/ (the committed corpus is only read; new inputs go to a scratch
# directory). Prints one line per check ("fuzz: ok ..." or "fuzz: FAIL ...") and "N passed,
# N failed"; exits non-zero on a failure. A crash found while fuzzing is kept under
# $FUZZ_ARTIFACTS (default: a scratch directory, named in the output) to be copied into
# tests/fuzz/crashes/<target>/.
set -u
seconds=${1:?usage: run.sh SECONDS [BUILD_DIR]}
build=${2:-build-fuzz}
cd "$(dirname "$0")/../.."
root=$(pwd)
work=$(mktemp -d)
artifacts=${FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$artifacts"

export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0

passed=0
failed=0
check() { # check NAME LOG COMMAND...: runs it, counts it
    name=$1
    log=$2
    shift 2
    if "$@" >"$log" 2>&1; then
        echo "fuzz: ok $name"
        passed=$((passed + 1))
    else
        echo "fuzz: FAIL $name (log: $log)"
        grep -E 'ERROR|runtime error|invariant failed|^    #[0-9] |Test unit written' "$log" |
            grep -v 'in fuzzer::' | head -n 20
        failed=$((failed + 1))
    fi
}

for target in checkpoint idx graph; do
    exe=$build/tests/fuzz/fuzz_$target
    if [ ! -x "$exe" ]; then
        echo "fuzz: FAIL $target: $exe not built (meson setup $build -Dfuzz=true, CC=clang)"
        failed=$((failed + 1))
        continue
    fi
    # One check per committed crash input.
    for input in $(find "tests/fuzz/crashes/$target" -type f ! -name '.*' 2>/dev/null | sort); do
        check "$target replay $(basename "$input")" "$work/$target-$(basename "$input").log" \
            "$exe" "$input"
    done
    dict=""
    [ -f "tests/fuzz/$target.dict" ] && dict="-dict=tests/fuzz/$target.dict"
    mkdir -p "$work/corpus-$target" "$artifacts/$target"
    check "$target ${seconds}s" "$work/$target-fuzz.log" \
        "$exe" -max_total_time="$seconds" -timeout=20 -print_final_stats=1 \
        -artifact_prefix="$artifacts/$target/" $dict "$work/corpus-$target" \
        "tests/fuzz/corpus/$target"
    sed -n 's/^stat::number_of_executed_units: */      executions: /p' "$work/$target-fuzz.log"
    echo "      corpus: $(find "$work/corpus-$target" -type f | wc -l) new inputs"
done
echo "fuzz artifacts: $artifacts"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
