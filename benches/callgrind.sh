# Shared by instructions.sh, live_instructions.sh, concurrent_instructions.sh and
# services_instructions.sh (sourced, not run): valgrind, the AGAINST worktree, the build with
# line tables, a server under callgrind with a client driving it, the table, and the DETAIL
# listing. The sourcing script defines build (TREE TARGET_DIR -> executable) and count
# (EXECUTABLE SCENARIO -> instructions per request), sets $work (and $PORT for a server), and
# calls cg_cleanup from its EXIT trap.

server_pid="" # the server under callgrind, while one runs

# Kills a server left running, removes the worktree against() made and $work (KEEP=DIR: copies
# the callgrind outputs into DIR first).
cg_cleanup() {
    if [ -n "$server_pid" ]; then kill -9 "$server_pid" 2>/dev/null || true; fi
    drop_against
    [ -n "${KEEP:-}" ] && cp "$work"/cg.* "$KEEP"/ 2>/dev/null
    rm -rf "$work"
}

# Installs valgrind when it is missing (Debian/Ubuntu, as root).
need_valgrind() {
    command -v valgrind >/dev/null 2>&1 && return 0
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
}

# build_lines TREE TARGET_DIR CARGO_ARGS...: cargo build --release in TREE, quietly, with line
# tables and not stripped: cg_groups.py gives each instruction to the source file it was
# compiled from, and the generated code, and the counts, stay as they are.
build_lines() {
    local tree=$1 target=$2
    shift 2
    (cd "$tree" && CARGO_TARGET_DIR="$target" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \
        cargo build --release --quiet "$@" 2>/dev/null)
}

# target_of EXECUTABLE: the name of the target directory it was built in (this tree's or
# AGAINST's), which labels its outputs.
target_of() { basename "${1%/release/*}"; }

# start_counted OUT CMD...: starts CMD under callgrind in the background (its output OUT,
# valgrind's messages OUT.log), sets server_pid, and waits (60 s at most) until something
# accepts on 127.0.0.1:$PORT; returns 1 if nothing did.
start_counted() {
    local out=$1 _
    shift
    # shellcheck disable=SC2086 # CG_OPTS: extra callgrind options, word-split (e.g. --dump-instr=yes)
    valgrind --tool=callgrind --callgrind-out-file="$out" ${CG_OPTS:-} "$@" >/dev/null 2>"$out.log" &
    server_pid=$!
    for _ in $(seq 600); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), timeout=1).close()" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# count_window: the counted window of a run. The client (coproc CLIENT) prints "warm" after its
# warm-up and waits for a line, sends the counted requests, prints "done [N]" and waits for a
# line again; the server's counters are zeroed in between and dumped after "done". N, if the
# client gave one, is left in window_requests. Returns 1, leaving the server and the client as
# they are, when the client did not say "warm" or "done".
count_window() {
    local line
    read -r line <&"${CLIENT[0]}" || true
    [ "$line" = warm ] || return 1
    callgrind_control --zero "$server_pid" >/dev/null 2>&1
    echo go >&"${CLIENT[1]}"
    read -r line window_requests <&"${CLIENT[0]}" || true
    [ "$line" = done ] || return 1
    callgrind_control --dump "$server_pid" >/dev/null 2>&1
    echo bye >&"${CLIENT[1]}"
    wait "$CLIENT_PID" 2>/dev/null || true
}

# fail_run MESSAGE: says so and stops this run's server and client.
fail_run() {
    echo "error: $1" >&2
    [ -z "${CLIENT_PID:-}" ] || kill -9 "$CLIENT_PID" 2>/dev/null || true
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# build TREE TARGET_DIR: what count_trees builds, printing the executable to count. By default
# quiesce, with line tables (build_lines); a script that counts another executable defines its own
# build after sourcing this file.
build() { build_lines "$1" "$2" && echo "$2/release/quiesce"; }

# stop_counted SIGNAL: sends SIGNAL to the server under callgrind and waits for its exit.
stop_counted() {
    kill -"$1" "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# dump_of OUT: the dump callgrind_control --dump made, OUT.1 (the exit's own dump, if any, is
# OUT itself).
dump_of() {
    local file dump=""
    for file in "$1".*; do
        [ -e "$file" ] && [ "$file" != "$1.log" ] && dump=$file
    done
    echo "$dump"
}

# finish_counted OUT PEER LABEL: stops the server under callgrind (a peer with SIGTERM: the peers
# have no handler, and SIGINT is ignored by a script's background job; quiesce with SIGINT),
# prints its costliest functions under "## LABEL" when DETAIL is set, and sets `dump` to its
# callgrind output.
finish_counted() {
    if [ -n "$2" ]; then stop_counted TERM; else stop_counted INT; fi
    dump=$(dump_of "$1")
    if [ -n "${DETAIL:-}" ]; then
        echo "## $3" >&2
        detail "$dump" "$(harness quiesce::main)"
    fi
}

# per_request DUMP REQUESTS: the instructions DUMP counted per request, rounded.
per_request() {
    local total
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$1")
    python3 -c "print(f'{$total / $2:.0f}')"
}

# harness MAIN: the frames around a server's work for detail's SKIP_REGEX (MAIN: the
# executable's main function).
harness() { echo "PROGRAM TOTALS|below main|libc_start|lang_start|rust_begin_short|$1|thread_start|start_thread|clone3"; }

# count_trees TITLE SCENARIO...: builds this tree (binary) and AGAINST's (base, "" without it),
# then prints the table of their counts (each run leaving its callgrind output in
# $work/groups.SCENARIO.TARGET) and the same counts split by function group (cg_groups.py).
count_trees() {
    local title=$1
    shift
    [ -z "${AGAINST:-}" ] && [ -z "${CARGO_TARGET_DIR:-}" ] && export CARGO_TARGET_DIR=$PWD/target/instructions-this
    binary=$(this)
    base=$(against)
    table "$title" "$binary" "$base" "$@"
    echo
    echo "# by function group (instructions per request; benches/cg_groups.py)"
    group_columns "$binary" "$base" "$@"
    python3 benches/cg_groups.py "$REQUESTS" "${columns[@]}"
}

# group_columns EXECUTABLE BASE_EXECUTABLE SCENARIO...: sets columns to cg_groups.py's
# arguments: per scenario the output kept in $work/groups.SCENARIO.TARGET for BASE_EXECUTABLE
# (when there is one: AGAINST's build), then for EXECUTABLE.
group_columns() {
    local exe=$1 base=$2 scenario
    shift 2
    columns=()
    for scenario in "$@"; do
        if [ -n "$base" ]; then
            columns+=("$scenario $(git rev-parse --short "$AGAINST")=$work/groups.$scenario.$(target_of "$base")")
        fi
        columns+=("$scenario${base:+ this}=$work/groups.$scenario.$(target_of "$exe")")
    done
}

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
