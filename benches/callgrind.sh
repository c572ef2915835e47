# Shared by instructions.sh and live_instructions.sh (sourced, not run): the AGAINST worktree,
# the table, and the DETAIL listing. The sourcing script defines build (TREE TARGET_DIR ->
# executable) and count (EXECUTABLE SCENARIO -> instructions per request), and sets $work.

# The executable of revision $AGAINST, built in a worktree under $work ("" without AGAINST).
against() {
    [ -n "${AGAINST:-}" ] || return 0
    git worktree add --detach -f "$work/tree" "$(git rev-parse --short "$AGAINST")" >/dev/null 2>&1
    build "$work/tree" "$PWD/target/instructions-base"
}

# The executable of this tree (with its uncommitted changes). With AGAINST it is built from a
# copy whose path, and target directory's, are as long as the worktree's: the code generated
# changes with the length of the paths compiled in (by about 10 instructions per request), and
# the comparison must not see that.
this() {
    if [ -z "${AGAINST:-}" ]; then
        build . "${CARGO_TARGET_DIR:-$PWD/target}"
        return
    fi
    mkdir -p "$work/this"
    tar --exclude=./target --exclude=./fuzz --exclude=./.git -cf - . | tar -xf - -C "$work/this"
    build "$work/this" "$PWD/target/instructions-this"
}

# Removes the worktree against() made (for the caller's EXIT trap).
drop_against() {
    [ -d "$work/tree" ] && git worktree remove --force "$work/tree" >/dev/null 2>&1
    return 0
}

# table TITLE EXECUTABLE BASE_EXECUTABLE SCENARIO...: one row per scenario; with a base, its
# count and the change in percent beside.
table() {
    local title=$1 exe=$2 base=$3
    shift 3
    echo "# $title (callgrind, $REQUESTS requests per scenario; $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'))"
    if [ -n "$base" ]; then
        printf '| %-24s | %10s | %10s | %7s |\n|---|---|---|---|\n' scenario "$(git rev-parse --short "$AGAINST")" this change
    else
        printf '| %-24s | %10s |\n|---|---|\n' scenario "Ir/request"
    fi
    local scenario now before change
    for scenario in "$@"; do
        now=$(count "$exe" "$scenario")
        if [ -n "$base" ]; then
            before=$(count "$base" "$scenario")
            change=$(python3 -c "print(f'{($now - $before) / $before * 100:+.1f}%')")
            printf '| %-24s | %10s | %10s | %7s |\n' "$scenario" "$before" "$now" "$change"
        else
            printf '| %-24s | %10s |\n' "$scenario" "$now"
        fi
    done
}

# detail FILE SKIP_REGEX: the costliest functions per request (inclusive) of a callgrind
# output, on stderr, leaving out the frames that match SKIP_REGEX (the harness around them).
detail() {
    callgrind_annotate --inclusive=yes "$1" 2>/dev/null | python3 -c '
import re, sys
n, skip, rows = int(sys.argv[1]), re.compile(sys.argv[2]), 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$", line)
    if not m or skip.search(line):
        continue
    ir = int(m.group(1).replace(",", "")) / n
    if ir < 20 or rows == 30:
        break
    name = re.sub(r" \[.*\]$", "", m.group(2))
    name = re.sub(r"^(\?\?\?|[^ ]*/[^ :]*):(?!:)", "", name)
    print(f"  {ir:8.0f}  {name}")
    rows += 1' "$REQUESTS" "$2" >&2
}
