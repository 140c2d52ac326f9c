#!/bin/sh
# Builds one libFuzzer target with clang (the main build uses g++) and runs it for a bounded time.
# Usage: run-fuzzer.sh SOURCE_DIR BUILD_DIR NAME SECONDS [--seeds DIR]... FUZZ_SOURCE [LIBRARY_SOURCES...]
#        [-lLIB...]
# Include paths are the public include dirs of the policy, protocol and orchestrator libraries; the
# sources may need system libraries beyond the standard library only through -l flags (e.g.
# -lpugixml). Seed directories are read, never written. Fails on any crash, leak or sanitizer report.
set -eu
src=$1 build=$2 name=$3 seconds=$4
shift 4
seeds=
while [ "${1-}" = --seeds ]; do
  [ -d "$2" ] || { echo "run-fuzzer.sh: seed directory '$2' does not exist" >&2; exit 2; }
  seeds="$seeds $2"
  shift 2
done
out="$build/fuzz"
mkdir -p "$out/$name-corpus"
clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$src/policies/include" -I"$src/agent/protocol/include" -I"$src/orchestrator/include" "$@" -o "$out/$name"
# Seeds may also live beside the target in tests/fuzz/corpus/NAME; findings go to the build dir.
[ -d "$src/tests/fuzz/corpus/$name" ] && seeds="$seeds $src/tests/fuzz/corpus/$name"
# Inputs up to 4096 bytes, or the largest seed, so that whole seed documents are kept.
max_len=4096
if [ -n "$seeds" ]; then
  for f in $(find $seeds -type f); do
    n=$(wc -c <"$f")
    if [ "$n" -gt "$max_len" ]; then max_len=$n; fi
  done
fi
cd "$out"
# shellcheck disable=SC2086 # $seeds is a list of directories without spaces
exec "./$name" -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 \
  -artifact_prefix="$out/$name-" "$out/$name-corpus" $seeds
