# Shared by benches/offloop.sh and benches/blocking.sh (sourced, not run): start a server pinned
# to SERVER_CPU and wait until it accepts, stop it, and read its CPU ticks. Expects `work` (a
# scratch directory) and `pids` (an array) to be set by the caller.

# start PORT CMD...: starts a server pinned to SERVER_CPU, waits until it accepts.
start() {
    local port=$1
    shift
    taskset -c "$SERVER_CPU" "$@" >"$work/server.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=1).close()" 2>/dev/null && return
        sleep 0.05
    done
    echo "server on $port did not start" >&2
    exit 1
}
# Stops the last started server (SIGINT: it drains) and forgets it.
stop() { kill -INT "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
# CPU ticks (utime + stime) of the last started server, all threads.
ticks() { awk '{print $14 + $15}' "/proc/${pids[-1]}/stat"; }
hz=$(getconf CLK_TCK)
