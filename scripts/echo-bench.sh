#!/usr/bin/env bash
# Echo round trips: liveline's reactor (examples/echo.rs) against a tokio current_thread
# server (examples/tokio_echo.rs), same load generator (examples/echo_load.rs), same run.
# The server runs on CPU 0 and the load on CPU 1 where taskset exists. Besides round trips
# per second, the server's own CPU time per round trip is recorded: when the one-thread
# load generator is the bottleneck, both servers reach the same rate, and the CPU each one
# spent on it is what tells them apart. Then system calls per round trip of each server,
# counted by strace -c over a short run.
#
# Usage: scripts/echo-bench.sh [SECONDS]   (default 3 per point)
# Output: docs/echo-bench.tsv and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
cargo build --release --example echo --example tokio_echo --example echo_load >/dev/null
bin=target/release/examples
# Runs a command pinned to a CPU; `exec` keeps the pid of a backgrounded call the command's.
pin() { if command -v taskset >/dev/null; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

start_server() { # name port -> pid in $server_pid
    local exe=$1 port=$2
    (pin 0 "$bin/$exe" "127.0.0.1:$port" >/dev/null) &
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "server $exe did not start" >&2
    return 1
}

out=docs/echo-bench.tsv
mkdir -p docs
printf 'server\tconns\tin_flight\trtt_per_s\tp50_us\tp99_us\tcpu_us_per_rt\n' >"$out"
for server in echo tokio_echo; do
    port=$((17000 + RANDOM % 1000))
    start_server "$server" "$port"
    for conns in 1 100 1000; do
        for inflight in 1 16; do
            t0=$(ticks "$server_pid")
            line=$( (pin 1 "$bin/echo_load" "127.0.0.1:$port" "$conns" "$inflight" "$secs") )
            t1=$(ticks "$server_pid")
            rtt=$(sed -E 's/.*rtt_per_s=([0-9]+).*/\1/' <<<"$line")
            total=$(sed -E 's/.*total=([0-9]+).*/\1/' <<<"$line")
            cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$total" 'BEGIN{printf "%.2f", t / hz * 1e6 / n}')
            p50=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line")
            p99=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$conns" "$inflight" "$rtt" "$p50" "$p99" "$cpu" |
                tee -a "$out"
        done
    done
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
done

if command -v strace >/dev/null; then
    echo
    echo "system calls per round trip (100 connections, 1 in flight, 2 s):"
    for server in echo tokio_echo; do
        port=$((18000 + RANDOM % 1000))
        start_server "$server" "$port"
        strace -c -f -o "/tmp/strace-$server.txt" -p "$server_pid" &
        tracer=$!
        sleep 0.5
        line=$( (pin 1 "$bin/echo_load" "127.0.0.1:$port" 100 1 2) )
        kill -INT "$tracer"
        wait "$tracer" 2>/dev/null || true
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
        total=$(sed -E 's/.*total=([0-9]+).*/\1/' <<<"$line")
        calls=$(awk '$NF=="total"{print $4}' "/tmp/strace-$server.txt")
        printf '%s\tcalls=%s\tround_trips=%s\tcalls_per_rt=%s\n' "$server" "$calls" "$total" \
            "$(awk -v c="$calls" -v r="$total" 'BEGIN{printf "%.2f", c/r}')"
        grep -E 'epoll|read|write|recv|send' "/tmp/strace-$server.txt" | awk '{print "   ", $NF, $4}'
    done
fi
