#!/usr/bin/env bash
# Past one process: SERVERS liveline server processes (examples/hb_server.rs) share one
# port with SO_REUSEPORT, LOADS load processes (examples/hb_load.rs) hold SESSIONS sessions
# with heartbeats, each load connecting from its own loopback source addresses (one source
# address has ~28,000 ephemeral ports; this host allows 20,000 descriptors per process).
# After HOLD seconds, one server is killed with kill -9 and its clients come back to the
# others. Loopback only; stops by itself.
#
# Usage: scripts/scale-bench.sh [SESSIONS] [SERVERS] [LOADS] [HOLD] [PING_MS]
#        (default 100000 8 6 60 10000: 8 servers, so that after one is killed each of
#        the others still holds well under 20,000 descriptors)
# Output: a table on stdout, and docs/scale-bench.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-100000}
servers=${2:-8}
loads=${3:-6}
hold=${4:-60}
ping_ms=${5:-10000}
per_load=$(( (sessions + loads - 1) / loads ))
cargo build --release --example hb_server --example hb_load >/dev/null
bin=target/release/examples
port=$((20000 + RANDOM % 10000))
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
tcp_mem_pages() { awk '/^TCP:/{for(i=1;i<=NF;i++) if($i=="mem") print $(i+1)}' /proc/net/sockstat; }
slab_kib() { awk '/^Slab:/{print $2}' /proc/meminfo; }
hz=$(getconf CLK_TCK)
ulimit -n 20000

kmem0=$(tcp_mem_pages); slab0=$(slab_kib)
spids=()
for i in $(seq "$servers"); do
    "$bin/hb_server" "127.0.0.1:$port" reuse >"$work/server$i.txt" 2>&1 &
    spids+=($!); pids+=($!)
done
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
sleep 0.5
rss0=0; for p in "${spids[@]}"; do rss0=$((rss0 + $(rss_kib "$p"))); done
base_fds=$(fds "${spids[0]}")

lpids=()
t_start=$(date +%s.%N)
for i in $(seq "$loads"); do
    # Two source addresses per load process: 127.0.0.(2i) and 127.0.0.(2i+1).
    from="127.0.0.$((2 * i)),127.0.0.$((2 * i + 1))"
    "$bin/hb_load" "127.0.0.1:$port" "$per_load" "$ping_ms" $((hold + 40)) "$from" >"$work/load$i.txt" 2>&1 &
    lpids+=($!); pids+=($!)
done
for _ in $(seq 1200); do
    up=$(cat "$work"/load*.txt | grep -c "sessions up after" || true)
    [ "$up" -ge "$loads" ] && break
    sleep 0.1
done
t_up=$(date +%s.%N)
sleep 2
t0=0; for p in "${spids[@]}"; do t0=$((t0 + $(ticks "$p"))); done
s0=$(date +%s.%N)
sleep "$hold"
t1=0; for p in "${spids[@]}"; do t1=$((t1 + $(ticks "$p"))); done
s1=$(date +%s.%N)
rss1=0; for p in "${spids[@]}"; do rss1=$((rss1 + $(rss_kib "$p"))); done
kmem1=$(tcp_mem_pages); slab1=$(slab_kib)
counts=(); for p in "${spids[@]}"; do counts+=($(( $(fds "$p") - base_fds ))); done
active=$(for f in "$work"/load*.txt; do grep '^t=' "$f" | tail -1 | sed -E 's/.*active=([0-9]+).*/\1/'; done | awk '{s+=$1} END{print s+0}')
losses_before=$(for f in "$work"/load*.txt; do grep '^t=' "$f" | tail -1 | sed -E 's/.*losses=([0-9]+).*/\1/'; done | awk '{s+=$1} END{print s+0}')

# The storm: the busiest server dies.
victim=0; most=0
for i in "${!counts[@]}"; do if [ "${counts[$i]}" -gt "$most" ]; then most=${counts[$i]}; victim=$i; fi; done
kill -9 "${spids[$victim]}"; wait "${spids[$victim]}" 2>/dev/null || true
for p in "${lpids[@]}"; do wait "$p" || true; done
echo "outputs in $work" >&2

total=$(( per_load * loads ))
mean=$(( total / servers ))
max=0; for c in "${counts[@]}"; do [ "$c" -gt "$max" ] && max=$c; done
{
echo "sessions asked: $total ($loads load processes x $per_load), servers: $servers on 127.0.0.1:$port (SO_REUSEPORT), ping every $ping_ms ms"
echo "sessions up: $active, lost while held: $losses_before, all up after $(awk -v a="$t_start" -v b="$t_up" 'BEGIN{printf "%.1f", b-a}') s"
echo "per server (connections): ${counts[*]}; max/mean $(awk -v m="$max" -v n="$mean" 'BEGIN{printf "%.3f", m/n}')"
echo "server RSS per connection (user space): $(awk -v a="$rss0" -v b="$rss1" -v n="$total" 'BEGIN{printf "%.0f", (b-a)*1024/n}') B"
echo "kernel TCP buffer memory per connection (sockstat mem, both ends): $(awk -v a="$kmem0" -v b="$kmem1" -v n="$total" 'BEGIN{printf "%.0f", (b-a)*4096/n}') B; slab per connection (both ends): $(awk -v a="$slab0" -v b="$slab1" -v n="$total" 'BEGIN{printf "%.0f", (b-a)*1024/n}') B"
echo "server CPU over $hold s: $(awk -v a="$t0" -v b="$t1" -v x="$s0" -v y="$s1" -v hz="$hz" 'BEGIN{printf "%.1f", 100*(b-a)/hz/(y-x)}') % of one core; per heartbeat: $(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$total" -v h="$hold" -v p="$ping_ms" 'BEGIN{printf "%.2f", (b-a)/hz*1e6/(n*h*1000/p)}') us"
echo "kill -9 of server $((victim + 1)) holding ${counts[$victim]} sessions:"
for f in "$work"/load*.txt; do
    echo "  $(basename "$f" .txt): $(grep -E '^all .* back|^clients=' "$f" | tr '\n' ' ')"
    grep -E 'reconnects per 100 ms|during the storm' "$f" | sed 's/^/    /'
done
} | tee docs/scale-bench.txt
