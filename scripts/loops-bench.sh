#!/usr/bin/env bash
# One loop against two loops in one process, on this machine's cores: the raw echo server
# (examples/echo.rs) with 1 and with 2 loops (SO_REUSEPORT), and tokio's echo server with a
# multi_thread runtime of 2 workers (examples/tokio_echo.rs), each under the same load
# (examples/echo_load.rs: CONNS connections, 1 round trip in flight each). Reports round
# trips per second, the server's CPU time per round trip, and for the two-loop server how
# evenly its loop threads shared the work (CPU time per thread).
#
# Usage: scripts/loops-bench.sh [SECONDS] [CONNS]   (default 5 1000)
# Output: a table on stdout and docs/loops-bench.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conns=${2:-1000}
cargo build --release --example echo --example tokio_echo --example echo_load >/dev/null
bin=target/release/examples
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
out=docs/loops-bench.tsv
printf 'server\tconns\trtt_per_s\tp99_us\tcpu_us_per_rt\tper_thread_cpu_ticks\n' | tee "$out"
for spec in "echo 1" "echo 2" "tokio_echo 2"; do
    set -- $spec
    exe=$1 n=$2
    port=$((21000 + RANDOM % 1000))
    if [ "$exe" = echo ] && [ "$n" = 1 ]; then
        "$bin/$exe" "127.0.0.1:$port" >/dev/null &
    else
        "$bin/$exe" "127.0.0.1:$port" "$n" >/dev/null &
    fi
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    t0=$(ticks "$pid")
    line=$("$bin/echo_load" "127.0.0.1:$port" "$conns" 1 "$secs")
    t1=$(ticks "$pid")
    threads=$(for t in /proc/"$pid"/task/*; do awk '{printf "%s:%d ", $2, $14+$15}' "$t/stat"; done)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rtt=$(sed -E 's/.*rtt_per_s=([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.*total=([0-9]+).*/\1/' <<<"$line")
    p99=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line")
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$total" 'BEGIN{printf "%.2f", t / hz * 1e6 / n}')
    printf '%s x%s\t%s\t%s\t%s\t%s\t%s\n' "$exe" "$n" "$conns" "$rtt" "$p99" "$cpu" "$threads" | tee -a "$out"
done
