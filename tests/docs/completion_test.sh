#!/usr/bin/env bash
# bash completion of llmorch and llmorchd (orchestrator/completion/llmorch). Usage:
#   completion_test.sh COMPLETION_FILE
# Loads bash-completion's framework when it is installed (as an interactive shell would), then the
# file, and calls the completion functions with COMP_WORDS/COMP_CWORD set as bash sets them. VM names
# come from 'llmorch list': a stand-in llmorch on PATH prints what the real one prints (its table), so
# the test needs no libvirt.
set -uo pipefail
file=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0

if [[ -r /usr/share/bash-completion/bash_completion ]]; then
    # shellcheck disable=SC1091
    source /usr/share/bash-completion/bash_completion
    echo "with bash-completion's framework"
fi
# shellcheck disable=SC1090
source "$file"

mkdir -p "$work/bin" "$work/t/sub"
cat >"$work/bin/llmorch" <<'STUB'
#!/bin/sh
[ "$1" = list ] || exit 2
echo "NAME        STATE    POLICY     NODES  CPUS  VCPUS  MEMORY"
echo "chat-7b     running  dedicated  0      2-3   2/2    8192/8192 MiB"
echo "batch       running  shared     0      4-7   1/4    4096/4096 MiB"
echo "broken      running  ?          ?      ?     ?      ?"
echo "vm broken: metadata unreadable (llmorchd leaves it alone)"
STUB
chmod +x "$work/bin/llmorch"
PATH=$work/bin:$PATH
touch "$work/t/llm-7b.conf" "$work/t/old.ini" "$work/t/notes.txt"

# complete FUNCTION WORD... : the candidates for the last word, sorted, on one line.
complete_words() {
    local fn=$1
    shift
    COMP_WORDS=("$@")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE="$*"
    COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    "$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]:-}"
    printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ' | sed 's/ $//'
}
expect() {  # expect WHAT WANT GOT
    if [[ $2 == "$3" ]]; then
        echo "ok: $1: $3"
    else
        echo "FAIL: $1: want '$2', got '$3'" >&2
        fail=1
    fi
}

expect "subcommands" "--help --version explain host list place plan remove status top weights" \
    "$(complete_words _llmorch llmorch '')"
expect "subcommands starting with p" "place plan" "$(complete_words _llmorch llmorch p)"
expect "options of place starting with --t" "--template" "$(complete_words _llmorch llmorch place --t)"
expect "options of place starting with --d" "--dry-run" "$(complete_words _llmorch llmorch place --d)"
expect "options of top" "--help --interval --once --state-dir" "$(complete_words _llmorch llmorch top --)"
expect "template files" "$work/t/llm-7b.conf $work/t/old.ini $work/t/sub" \
    "$(complete_words _llmorch llmorch place --template "$work/t/")"
expect "--set keys" "priority= priority_max= priority_min=" "$(complete_words _llmorch llmorch place --set pri)"
expect "VM names for status" "batch broken chat-7b" "$(complete_words _llmorch llmorch status '')"
expect "VM names for remove starting with c" "chat-7b" "$(complete_words _llmorch llmorch remove -c qemu:///system c)"
expect "llmorchd options starting with --d" "--domain-prefix --dry-run" "$(complete_words _llmorchd llmorchd --d)"
expect "llmorchd log levels" "debug" "$(complete_words _llmorchd llmorchd --log-level de)"
expect "registered for llmorch" "complete -F _llmorch llmorch" "$(complete -p llmorch)"
exit $fail
