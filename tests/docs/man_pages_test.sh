#!/usr/bin/env bash
# The man pages (orchestrator/man, agent/man). Usage:
#   man_pages_test.sh render MANDIR              every page renders with man -l (groff) without a warning
#   man_pages_test.sh cover SRCDIR LLMORCH LLMORCHD AGENT
#       every long option that llmorch (and each of its commands), llmorchd and llmorch-agent print in
#       --help, every command, and every host-config and template key (orchestrator/src/config.cc,
#       template.cc) appears in the matching page's source, so a page cannot silently fall behind.
set -uo pipefail
fail=0
problem() { echo "FAIL: $*" >&2; fail=1; }

case $1 in
render)
    pages=("$2"/*.[1-8])
    ((${#pages[@]} >= 5)) || problem "expected 5 pages in $2, found ${#pages[@]}: ${pages[*]}"
    for page in "${pages[@]}"; do
        if command -v man >/dev/null; then
            out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings=all -l "$page" 2>"$page.warnings")
        else
            out=$(LC_ALL=C.UTF-8 groff -man -Tutf8 -wall "$page" 2>"$page.warnings")
        fi
        [[ -s $page.warnings ]] && problem "$page: $(cat "$page.warnings")"
        grep -q "^NAME" <<<"$out" || problem "$page: rendered without a NAME section"
        grep -q "^SEE ALSO" <<<"$out" || problem "$page: rendered without a SEE ALSO section"
        echo "$page: $(wc -l <<<"$out") lines"
    done
    ;;
cover)
    src=$2 llmorch=$3 llmorchd=$4 agent=$5
    # Long options of a --help text: every one on its usage line, and the one each option line starts
    # with ("  --json ...", "  -c, --connect URI ...", Boost's "  -c [ --connect ] arg"); not options
    # mentioned in prose ("'virsh list --all' shows them").
    options() {
        awk '/^[Uu]sage:/ || /^ +llmorch[a-z-]* / { print; next }
             /^ +(-[A-Za-z](, | \[ ))?--[a-z]/ { print $1, $2, $3 }' |
            grep -oE -- '--[a-z][a-z0-9-]+' | sort -u
    }
    # The page's source with scdoc's escapes undone.
    page() { sed 's/\\//g' "$1"; }
    check() {  # check WHAT PAGE WORD...
        local what=$1 file=$2 text word
        shift 2
        text=$(page "$file")
        (($# > 0)) || problem "$what: nothing to check (did the --help or source format change?)"
        for word in "$@"; do
            grep -qF -- "$word" <<<"$text" || problem "$what '$word' is not in $(basename "$file")"
        done
    }
    commands=$("$llmorch" --help | awk '/^commands:/ { on = 1; next } on && NF == 0 { on = 0 } on { print $1 }')
    # shellcheck disable=SC2086  # lists of words
    check "llmorch command" "$src/orchestrator/man/llmorch.8.scd" $commands
    # shellcheck disable=SC2046
    check "llmorch --help option" "$src/orchestrator/man/llmorch.8.scd" $("$llmorch" --help | grep -oE -- '--[a-z-]+')
    for c in $commands; do
        # shellcheck disable=SC2046
        check "llmorch $c option" "$src/orchestrator/man/llmorch.8.scd" $("$llmorch" "$c" --help | options)
    done
    # shellcheck disable=SC2046
    check "llmorchd option" "$src/orchestrator/man/llmorchd.8.scd" $("$llmorchd" --help | options)
    # shellcheck disable=SC2046
    check "llmorch-agent option" "$src/agent/man/llmorch-agent.8.scd" $("$agent" --help | options)
    keys() { grep -oE '^ *\{"[a-z_]+", "' "$1" | grep -oE '[a-z_]+'; }
    # shellcheck disable=SC2046
    check "host config key" "$src/orchestrator/man/llmorch.conf.5.scd" $(keys "$src/orchestrator/src/config.cc")
    # shellcheck disable=SC2046
    check "template key" "$src/orchestrator/man/llmorch-template.5.scd" $(keys "$src/orchestrator/src/template.cc")
    echo "commands: $(wc -w <<<"$commands"), host keys: $(keys "$src/orchestrator/src/config.cc" | wc -l)," \
        "template keys: $(keys "$src/orchestrator/src/template.cc" | wc -l)"
    ;;
*)
    echo "usage: $0 render MANDIR | cover SRCDIR LLMORCH LLMORCHD AGENT" >&2
    exit 2
    ;;
esac
exit $fail
