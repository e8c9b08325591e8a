#!/usr/bin/env bash
# Notebox's memory at scale (docs/PERFORMANCE.md, "Memory"): resident memory (VmRSS) and
# threads of the notebox process idle, with N running notebooks, and with W idle
# WebSockets open through the proxy on top, in one run.
#
#   benches/run-memory.sh                                   # 50 notebooks, 200 WebSockets
#   BENCH_NOTEBOOKS=10 BENCH_WEBSOCKETS=40 benches/run-memory.sh
#
# The notebooks run tests/upstream/echo.py (a small tornado server) in the test image,
# served the way members reach them (origin = "ports": each on its own port). Every
# notebook answers one request through the proxy before the second reading; the
# WebSockets are spread over the notebooks, each echoes one message through the proxy
# and then stays open (idle) for the third reading. Target (issue 15): RSS ≤ 20 MiB +
# 64 KiB per open WebSocket. Exit status 0 when met, 1 when not, 2 when it could not run.
# Needs a running Docker engine, Rust, curl, python3. BENCH_KEEP=1 keeps the temp dir;
# BENCH_HOLD=SECONDS keeps everything up that long after the readings (to look by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=run-memory
# shellcheck source=benches/lib.sh
source benches/lib.sh
N=${BENCH_NOTEBOOKS:-50}
W=${BENCH_WEBSOCKETS:-200}
HOLDER_PID=""
stop_holder() { [ -n "$HOLDER_PID" ] && kill "$HOLDER_PID" 2>/dev/null; }
BENCH_CLEANUP=stop_holder

bench_image
bench_build
say "machine"
bench_machine
bench_config 'origin = "ports"'
bench_start_notebox

# RSS in KiB and threads of notebox, after a moment's rest.
reading() {
    sleep 3
    awk '/^VmRSS/ {rss=$2} /^Threads/ {th=$2} END {print rss, th}' "/proc/$NOTEBOX_PID/status"
}
read -r IDLE_KIB IDLE_THREADS < <(reading)

say "starting $N echo notebooks"
IDS=()
for i in $(seq "$N"); do
    created=$(api POST /api/v1/notebooks "{\"name\": \"memory-$i\", \"image\": \"echo\", \"machine\": \"bench\"}")
    id=$(printf '%s' "$created" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -n 1)
    [ -n "$id" ] || die "notebook $i not created: $created"
    IDS+=("$id")
done
all_running() {
    local list
    list=$(api GET /api/v1/notebooks)
    case "$list" in *'"state":"failed"'*) die "a notebook failed: $list" ;; esac
    [ "$(printf '%s' "$list" | grep -o '"state":"running"' | wc -l)" -ge "$N" ]
}
wait_until 600 "$N notebooks to run" all_running
# Each notebook's own URL (its port is bound within a second of it running).
URLS=()
for id in "${IDS[@]}"; do
    own() {
        url=$(api GET "/api/v1/notebooks/$1" | sed -n 's/.*"jupyter_url":"\([^"]*\)".*/\1/p')
        [ -n "$url" ]
    }
    wait_until 10 "notebook $id's own URL" own "$id"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: token $API_TOKEN" "${url}hello")
    [ "$code" = 200 ] || die "GET ${url}hello through the proxy answered $code"
    URLS+=("$url")
done
read -r NB_KIB NB_THREADS < <(reading)

say "opening $W WebSockets through the proxy"
printf '%s\n' "${URLS[@]}" >"$WORK/urls"
python3 - "$WORK/urls" "$W" "$API_TOKEN" >"$WORK/holder.out" 2>&1 <<'PY' &
# Opens W WebSockets round-robin over the notebooks' echo endpoints, checks that each
# echoes one message, says "open W", and holds them until killed.
import base64, os, socket, sys, time
from urllib.parse import urlsplit
urls = [u.strip() for u in open(sys.argv[1]) if u.strip()]
count, token = int(sys.argv[2]), sys.argv[3]
socks = []
for i in range(count):
    u = urlsplit(urls[i % len(urls)] + "echo")
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Authorization: token {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"connection {i} closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit(f"connection {i}: {head.splitlines()[0]!r}")
    rest = head.split(b"\r\n\r\n", 1)[1]
    payload, mask = f"hello {i}".encode(), os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(payload)))
    while len(rest) < 2 + len(payload):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"connection {i} closed before its echo")
        rest += chunk
    if rest[2:2 + len(payload)] != payload:
        sys.exit(f"connection {i}: echo {rest!r}")
    socks.append(s)
print("open", len(socks), flush=True)
while True:
    time.sleep(60)
PY
HOLDER_PID=$!
holding() {
    kill -0 "$HOLDER_PID" 2>/dev/null || die "the WebSocket holder failed: $(cat "$WORK/holder.out")"
    grep -q '^open' "$WORK/holder.out"
}
wait_until 120 "$W WebSockets to open" holding
read -r WS_KIB WS_THREADS < <(reading)

TARGET_KIB=$((20 * 1024 + 64 * W))
awk -v idle="$IDLE_KIB" -v it="$IDLE_THREADS" -v nb="$NB_KIB" -v nt="$NB_THREADS" \
    -v ws="$WS_KIB" -v wt="$WS_THREADS" -v n="$N" -v w="$W" -v target="$TARGET_KIB" 'BEGIN {
    printf "\n%-40s %10s %8s\n", "notebox", "RSS MiB", "threads"
    printf "%-40s %10.1f %8d\n", "idle", idle / 1024, it
    printf "%-40s %10.1f %8d\n", n " running notebooks", nb / 1024, nt
    printf "%-40s %10.1f %8d\n", "+ " w " open WebSockets", ws / 1024, wt
    printf "\nper running notebook: %.1f KiB · per open WebSocket: %.1f KiB\n", (nb - idle) / n, (ws - nb) / w
    verdict = ws <= target ? "PASS" : "FAIL"
    printf "target: RSS <= 20 MiB + 64 KiB x %d = %.1f MiB: %.1f MiB — %s\n", w, target / 1024, ws / 1024, verdict
}'
if [ -n "${BENCH_HOLD:-}" ]; then
    # For a look by hand (gdb, /proc/PID/smaps): everything stays up this long.
    printf '\nholding %ss: notebox pid %s, %s\n' "$BENCH_HOLD" "$NOTEBOX_PID" "$NB_URL"
    sleep "$BENCH_HOLD"
fi
[ "$WS_KIB" -le "$TARGET_KIB" ]
