# shellcheck shell=bash
# Shared by compare.sh and tls.sh (sourced, not run): the tools, the scratch directory and the
# processes started in the background, each server pinned to SERVER_CPU with its pid in PID and
# its port in PORT (associative arrays the caller declares), and what is read from /proc and
# from wrk's output. Expects LOG_TAG (the name in log lines) to be set.

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$LOG_TAG" -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }

# need_tools TOOL[=PACKAGE]...: installs, with apt-get, the package of each tool that is missing
# (Debian/Ubuntu, as root); the package is named as the tool unless given.
need_tools() {
    local missing=() tool
    for tool in "$@"; do have "${tool%%=*}" || missing+=("${tool#*=}"); done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]} with apt-get"
    [[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# open_files IDLE: raises the open-file limit to the hard one, sets NOFILE, and stops unless a
# server can hold IDLE idle connections beside the load's.
open_files() {
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    NOFILE=$(ulimit -n)
    ((NOFILE >= $1 + 512)) || die "open-file limit $NOFILE (hard) is too low for IDLE=$1"
}

# scratch PREFIX: makes the scratch directory WORK (/tmp/PREFIX.XXXXXX) and, at exit, stops
# every process in STARTED and removes WORK (KEEP_WORK set: keeps it).
scratch() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    STARTED=() # every background process this script started
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cleanup() {
    local pid
    trap - EXIT INT TERM
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${STARTED[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n ${KEEP_WORK:-} ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}

forget() { # forget a pid we waited for
    local keep=() pid
    for pid in "${STARTED[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
    STARTED=("${keep[@]}")
}

# launch NAME URL CMD...: starts CMD pinned to SERVER_CPU (output appended to $WORK/NAME.log),
# sets PID[NAME], and waits until `probe URL` (defined by the caller) prints Hello, World!.
launch() {
    local s=$1 url=$2 tries=0
    shift 2
    taskset -c "$SERVER_CPU" "$@" >>"$WORK/$s.log" 2>&1 &
    PID[$s]=$!
    STARTED+=("${PID[$s]}")
    until [[ $(probe "$url" 2>/dev/null) == "Hello, World!" ]]; do
        tries=$((tries + 1))
        ((tries < 100)) || die "$s did not answer on $url (log: $(tail -3 "$WORK/$s.log"))"
        kill -0 "${PID[$s]}" 2>/dev/null || die "$s exited at start: $(tail -3 "$WORK/$s.log")"
        sleep 0.1
    done
}

stop_server() { # $1 = name: SIGKILL (used outside any measured shutdown)
    local pid=${PID[$1]} child
    for child in $(server_pids "$1"); do kill -KILL "$child" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}

server_pids() { # the server's process and its children (nginx: master + worker)
    local pid=${PID[$1]}
    echo "$pid"
    pgrep -P "$pid" 2>/dev/null || true
}

cpu_ticks() { # "TOTAL USER": utime + stime, and utime alone, of every process of the server (all threads), in clock ticks
    local total=0 user=0 pid stat rest f
    for pid in $(server_pids "$1"); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) } # fields from 3 (state) on
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12])) # fields 14 (utime) and 15 (stime)
        user=$((user + f[11]))
    done
    echo "$total $user"
}

rss_kb() { # VmRSS summed over the server's processes
    local total=0 pid kb
    for pid in $(server_pids "$1"); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# await_ready NAME PID OUT: waits (150 s at most) until the idle holder PID, holding NAME's
# connections, has printed "ready" to OUT.
await_ready() {
    local tries=0
    until grep -q '^ready' "$3"; do
        kill -0 "$2" 2>/dev/null || die "idle holder failed for $1: $(cat "$3")"
        tries=$((tries + 1))
        ((tries < 1500)) || die "idle holder not ready for $1 after 150 s"
        sleep 0.1
    done
}

# rotated REP SERVER...: sets ORDER to the servers, starting with the next one each repetition
# (A B C, B C A, C A B): whatever the first slot after a switch of scenario costs or gains lands
# on every server in turn.
rotated() {
    local rep=$1 shift_by
    shift
    ORDER=("$@")
    shift_by=$(((rep - 1) % ${#ORDER[@]}))
    ORDER=("${ORDER[@]:shift_by}" "${ORDER[@]:0:shift_by}")
}

# start_rep REP: starts every server of SERVERS and warms it up (the caller's start_server, and
# run_wrk for WARMUP), then sets ORDER for the repetition (rotated).
start_rep() {
    local rep=$1 s
    log "rep $rep/$REPS: starting $SERVERS"
    for s in $SERVERS; do
        start_server "$s"
        run_wrk "$s" warm "$WARMUP" "$WORK/warm.$s.txt"
    done
    # shellcheck disable=SC2086 # SERVERS is a list
    rotated "$rep" $SERVERS
}

# What wrk printed to OUT: requests completed, requests per second, errors (socket errors and
# non-2xx responses).
wrk_requests() { awk '/requests in/ {print $1}' "$1"; }
wrk_rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
wrk_errors() { awk '/Socket errors:/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10} /Non-2xx/ {e += $NF} END {print e + 0}' "$1"; }

# raw_numbers NAME...: the "Raw numbers" section of a result file, $WORK/NAME.tsv for each NAME.
raw_numbers() {
    local f
    echo
    echo "## Raw numbers"
    for f in "$@"; do
        echo
        echo "### $f.tsv"
        echo
        echo '```'
        cat "$WORK/$f.tsv"
        echo '```'
    done
}
