#!/usr/bin/env bash
# Heartbeats over TLS against plaintext, same load (examples/hb_load.rs), same run: the
# liveline server (examples/hb_server.rs) plaintext and over TLS, and tokio's
# (examples/tokio_hb_server.rs) over tokio-rustls with the same rustls settings, at CLIENTS
# sessions and RATE heartbeats a second: server CPU per heartbeat and RSS per connection. The certificates are made for the
# run with openssl (a CA and a certificate for localhost).
#
# Usage: scripts/tls-hb-bench.sh [CLIENTS] [SECONDS] [RATE]   (default 19990 15 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-19990}
secs=${2:-15}
rate=${3:-2000}
cargo build --release --example hb_server --example hb_load --example tokio_hb_server >/dev/null
bin=target/release/examples
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
ulimit -n 20000 2>/dev/null || true
(
    cd "$work"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
        -out ca.pem -subj "/CN=bench CA" -days 2 -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=keyCertSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem \
        -out leaf.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' >ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem \
        -days 2 -extfile ext 2>/dev/null
)
ping_ms=$(( clients * 1000 / rate ))
printf 'server\tclients\theartbeats_per_s\tup\tlosses\trss_bytes_per_conn\tcpu_us_per_heartbeat\n'
for run in "hb_server plain" "hb_server tls" "hb_server tls-1024" "tokio_hb_server tls"; do
    set -- $run
    server=$1 transport=${2%-*} max=
    # tls-1024: at most 1,024 handshakes under way at once; the rest of the storm waits in the
    # backlog, and the memory of handshakes in flight stays small.
    [ "$2" = tls-1024 ] && max=1024
    port=$((23000 + RANDOM % 1000))
    if [ "$transport" = tls ]; then
        HB_MAX_HANDSHAKES=$max HB_TLS_CERT="$work/cert.pem" HB_TLS_KEY="$work/key.pem" \
            "$bin/$server" "127.0.0.1:$port" >/dev/null &
    else
        "$bin/$server" "127.0.0.1:$port" >/dev/null &
    fi
    spid=$!; pids+=("$spid")
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    base=$(rss "$spid")
    if [ "$transport" = tls ]; then
        HB_TLS_CA="$work/ca.pem" "$bin/hb_load" "127.0.0.1:$port" "$clients" "$ping_ms" $((secs + 15)) >"$work/load.txt" 2>&1 &
    else
        "$bin/hb_load" "127.0.0.1:$port" "$clients" "$ping_ms" $((secs + 15)) >"$work/load.txt" 2>&1 &
    fi
    lpid=$!; pids+=("$lpid")
    for _ in $(seq 300); do grep -q "sessions up after" "$work/load.txt" 2>/dev/null && break; sleep 0.1; done
    sleep 2
    t0=$(ticks "$spid")
    sleep "$secs"
    t1=$(ticks "$spid")
    mem=$(rss "$spid")
    wait "$lpid" || true
    kill "$spid"; wait "$spid" 2>/dev/null || true
    result=$(grep '^clients=' "$work/load.txt")
    up=$(sed -E 's/.*up=([0-9]+).*/\1/' <<<"$result")
    losses=$(sed -E 's/.*losses=([0-9]+).*/\1/' <<<"$result")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server/$2" "$clients" "$rate" "$up" "$losses" \
        "$(awk -v m="$mem" -v b="$base" -v n="$clients" 'BEGIN{printf "%.0f", (m-b)*1024/n}')" \
        "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$rate" -v s="$secs" 'BEGIN{printf "%.2f", (b-a)/hz*1e6/(n*s)}')"
done
