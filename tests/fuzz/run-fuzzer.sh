#!/bin/sh
# Builds one libFuzzer target with clang (the main build uses g++) and runs it for a bounded time.
# Usage: run-fuzzer.sh SOURCE_DIR BUILD_DIR NAME SECONDS FUZZ_SOURCE [LIBRARY_SOURCES...]
# Include paths are the public include dirs of the protocol and orchestrator libraries; the sources
# must need nothing beyond them and the standard library. Fails on any crash, leak or sanitizer report.
set -eu
src=$1 build=$2 name=$3 seconds=$4
shift 4
out="$build/fuzz"
mkdir -p "$out/$name-corpus"
clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$src/agent/protocol/include" -I"$src/orchestrator/include" "$@" -o "$out/$name"
# Seeds (if any) live beside the target in tests/fuzz/corpus/NAME; findings go to the build dir.
seeds="$src/tests/fuzz/corpus/$name"
[ -d "$seeds" ] || seeds=
cd "$out"
exec "./$name" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix="$out/$name-" "$out/$name-corpus" $seeds
