#!/usr/bin/env bash
# Heartbeats over real sockets: a liveline server (examples/hb_server.rs) and a tokio
# current_thread server doing the same job (examples/tokio_hb_server.rs), each holding
# CLIENTS sessions from one load-generator process (examples/hb_load.rs: liveline client
# sessions on one loop) at two heartbeat rates. Reports server RSS per connection and
# server CPU. Server on CPU 0, load on CPU 1 where taskset exists.
#
# Usage: scripts/hb-bench.sh [CLIENTS] [SECONDS]   (default 19000, 15)
# Output: docs/hb-bench.tsv and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-19000}
secs=${2:-15}
cargo build --release --example hb_server --example tokio_hb_server --example hb_load >/dev/null
bin=target/release/examples
pin() { if command -v taskset >/dev/null; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

out=docs/hb-bench.tsv
mkdir -p docs
printf 'server\tclients\theartbeats_per_s\tup\tlosses\trss_bytes_per_conn\tcpu_percent\n' >"$out"
for server in hb_server tokio_hb_server; do
    for rate in 2000 20000; do
        ping_ms=$(( clients * 1000 / rate ))
        port=$((19000 + RANDOM % 1000))
        (pin 0 "$bin/$server" "127.0.0.1:$port" >/dev/null) &
        spid=$!
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
        base=$(rss "$spid")
        # Load: connect everyone, then keep heartbeating for the measured window.
        ( (pin 1 "$bin/hb_load" "127.0.0.1:$port" "$clients" "$ping_ms" $((secs + 10))) >/tmp/hb-load.txt ) &
        lpid=$!
        for _ in $(seq 200); do grep -q "all .* sessions up" /tmp/hb-load.txt 2>/dev/null && break; sleep 0.1; done
        sleep 2
        t0=$(ticks "$spid"); s0=$(date +%s.%N)
        sleep "$secs"
        t1=$(ticks "$spid"); s1=$(date +%s.%N)
        mem=$(rss "$spid")
        wait "$lpid" || true
        kill "$spid"; wait "$spid" 2>/dev/null || true
        result=$(tail -1 /tmp/hb-load.txt)
        up=$(sed -E 's/.*up=([0-9]+).*/\1/' <<<"$result")
        losses=$(sed -E 's/.*losses=([0-9]+).*/\1/' <<<"$result")
        per_conn=$(awk -v m="$mem" -v b="$base" -v n="$clients" 'BEGIN{printf "%.0f", (m-b)*1024/n}')
        cpu=$(awk -v a="$t0" -v b="$t1" -v x="$s0" -v y="$s1" -v hz="$hz" 'BEGIN{printf "%.1f", 100*(b-a)/hz/(y-x)}')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$clients" "$rate" "$up" "$losses" "$per_conn" "$cpu" | tee -a "$out"
    done
done
