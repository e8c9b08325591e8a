#!/usr/bin/env bash
# Notebox's Jupyter proxy against nginx, side by side, in one run (docs/PERFORMANCE.md).
#
#   benches/run-proxy.sh                 # everything: build, set up, measure, clean up
#   benches/run-proxy.sh --duration 20   # extra arguments go to the load generator
#                                        # (benches/proxy.rs; `--help` lists them)
#
# What it does: installs nginx and wrk when missing (as root, with apt-get), builds
# notebox and the load generator in release mode, starts notebox on 127.0.0.1 with a
# throw-away data dir, creates a notebook whose "Jupyter" is tests/upstream/echo.py (a tiny
# tornado server: GET {base_url}hello and a WebSocket echo at {base_url}echo), starts
# nginx on 127.0.0.1 in front of the same container, runs the load generator against
# both (and against the container directly, for context), prints the table, and on exit
# (also on failure or Ctrl-C) stops nginx and notebox and removes the container.
#
# Needs: Debian 12 (or similar), a running Docker engine, Rust, root for the apt-get step.
# The container image is $BENCH_IMAGE, else notebox-test-jupyter:latest, built with
# tests/image/build.sh when missing. (The bench's knobs are BENCH_*: Notebox itself
# refuses NOTEBOX_* variables it does not know.)
#
# BENCH_ORIGIN=ports (default) measures the notebook on its own origin (its own port, as
# browsers and VS Code reach it with `origin = "ports"`); BENCH_ORIGIN=same serves it on
# Notebox's own port (`origin = "same"`), the path measured before issue 14.
#
# Environment: BENCH_WRK=0 skips the wrk cross-check; BENCH_KEEP=1 keeps the temp dir
# (configs, logs); BENCH_PERF=1 samples notebox with `perf record` (when perf is
# installed) during the measurements and prints its hottest functions. Results (text and
# JSON, and perf's) are also written under target/proxy-bench/. BENCH_HOLD=SECONDS sets
# everything up but, instead of measuring, prints the targets and keeps them up that long
# (at most 1800 s; Ctrl-C ends it early and cleans up), for measuring or profiling by hand.
# shellcheck disable=SC2317 # cleanup and the wait_until checks are called indirectly
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_NAME=run-proxy
# shellcheck source=benches/lib.sh
source benches/lib.sh

NGINX_PID=""
BENCH_PID=""
PERF_PID=""
NB_ID=""
# Before Notebox stops (lib.sh then removes the notebook's container).
stop_load_and_nginx() {
    if [ -n "$BENCH_PID" ]; then
        kill -TERM "$BENCH_PID" 2>/dev/null
        wait "$BENCH_PID" 2>/dev/null
    fi
    if [ -n "$PERF_PID" ]; then
        kill -INT "$PERF_PID" 2>/dev/null
        wait "$PERF_PID" 2>/dev/null
    fi
    if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill -QUIT "$NGINX_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NGINX_PID" 2>/dev/null
    fi
}
BENCH_CLEANUP=stop_load_and_nginx

# 1. Tools.
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    [ "$(id -u)" = 0 ] || die "missing ${need[*]}: install them with apt-get (as root) and run again"
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
ORIGIN=${BENCH_ORIGIN:-ports}
case "$ORIGIN" in ports | same) ;; *) die "BENCH_ORIGIN must be ports or same" ;; esac
bench_image

# 2. Release builds, before anything runs (the machine has few cores).
bench_build
say "the load generator (benches/proxy.rs)"
# The load generator runs as the built binary: a `cargo bench` at measuring time could
# start recompiling (while notebox and the container wait) if the sources changed since.
BENCH_BIN=$(cargo bench --locked --bench proxy --no-run --message-format=json \
    | grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//' | grep '/proxy-' | tail -n 1)
[ -x "$BENCH_BIN" ] || die "cannot find the built load generator (benches/proxy.rs)"

# 3. The machine, for the record.
say "machine"
bench_machine
nginx -v

# 4. Notebox with a throw-away data dir; the notebook runs echo.py.
bench_config "origin = \"$ORIGIN\""
bench_start_notebox

say "creating the echo notebook"
CREATED=$(api POST /api/v1/notebooks '{"name": "proxy-bench", "image": "echo", "machine": "bench"}')
NB_ID=$(printf '%s' "$CREATED" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -n 1)
[ -n "$NB_ID" ] || die "notebook not created: $CREATED"
running() {
    local nb
    nb=$(curl -s --max-time 5 -H "Authorization: Bearer $API_TOKEN" "$NB_URL/api/v1/notebooks/$NB_ID")
    case "$nb" in
        *'"state":"running"'*) return 0 ;;
        *'"state":"failed"'*) die "notebook failed: $nb" ;;
        *) return 1 ;;
    esac
}
wait_until 120 "notebook $NB_ID to be running" running
PREFIX="/nb/$NB_ID/"
# Where the notebook is served: its own port (origin = "ports"), or Notebox's.
own_url() {
    JUPYTER_URL=$(curl -s --max-time 5 -H "Authorization: Bearer $API_TOKEN" "$NB_URL/api/v1/notebooks/$NB_ID" \
        | sed -n 's/.*"jupyter_url":"\([^"]*\)".*/\1/p')
    [ -n "$JUPYTER_URL" ]
}
wait_until 10 "the notebook's own URL" own_url
SERVED=${JUPYTER_URL%"$PREFIX"}
printf 'notebook served at %s (origin = "%s")\n' "$JUPYTER_URL" "$ORIGIN"
CONTAINER=$(docker ps -q --filter "label=io.notebox.notebook=$NB_ID" | head -n 1)
[ -n "$CONTAINER" ] || die "no container labelled io.notebox.notebook=$NB_ID"
UP_IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$CONTAINER" | awk '{print $1}')
JUPYTER_TOKEN=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$CONTAINER" | sed -n 's/^JUPYTER_TOKEN=//p')
[ -n "$UP_IP" ] || die "container $CONTAINER has no IP address"
# Jupyter's own base URL carries the notebook's path key (/nb/ID/k-…/): Notebox maps the
# public prefix onto it, and so does nginx (location → proxy_pass with that URI). The
# direct baseline would need the key in every path: it is left out then.
JUPYTER_BASE=$(docker inspect -f '{{range .Config.Cmd}}{{println .}}{{end}}' "$CONTAINER" \
    | awk -v p="$PREFIX" '{ sub(/^--[A-Za-z]*\.base_url=/, "") } index($0, p) == 1 { print; exit }')
[ -n "$JUPYTER_BASE" ] || JUPYTER_BASE=$PREFIX
DIRECT=(--direct "http://$UP_IP:8888")
[ "$JUPYTER_BASE" = "$PREFIX" ] || DIRECT=()
printf 'notebook %s: container %s at %s:8888\n' "$NB_ID" "${CONTAINER:0:12}" "$UP_IP"

# 5. nginx in the foreground, on a free loopback port, in front of the same container.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
NGINX_PORT=""
for _ in $(seq 50); do
    p=$((20000 + RANDOM % 30000))
    if port_free "$p"; then NGINX_PORT=$p; break; fi
done
[ -n "$NGINX_PORT" ] || die "no free port for nginx"
mkdir -p "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<EOF
# As close to Notebox's proxy as nginx gets: one worker per core (actix runs one per
# core), HTTP/1.1 keep-alive upstream, responses and request bodies streamed rather than
# buffered, WebSocket upgrades passed through. nginx authenticates nobody; it only swaps
# the client's Authorization for the notebook's Jupyter token, as Notebox does. Its
# buffers are 64 KiB rather than the default 4 KiB: with the default, nginx relays a
# 64 KiB WebSocket message in 4 KiB pieces and is measurably slower (docs/PERFORMANCE.md);
# the benchmark compares against the better-tuned nginx.
daemon off;
worker_processes $(nproc);
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    upstream jupyter {
        server $UP_IP:8888;
        keepalive 64;
        keepalive_requests 1000000; # Notebox has no per-connection request limit either
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        keepalive_requests 1000000;
        client_max_body_size 0;
        location $PREFIX {
            proxy_pass http://jupyter$JUPYTER_BASE;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Authorization "token $JUPYTER_TOKEN";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_busy_buffers_size 128k;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
EOF
say "starting nginx on 127.0.0.1:$NGINX_PORT"
nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
    || die "nginx rejects its config: $(cat "$WORK/nginx/error.log")"
nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
nginx_up() {
    kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(cat "$WORK/nginx/error.log")"
    curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$NGINX_PORT${PREFIX}hello"
}
wait_until 15 "nginx to answer" nginx_up
NGINX_PIDS=$NGINX_PID
for w in $(pgrep -P "$NGINX_PID" 2>/dev/null); do NGINX_PIDS="$NGINX_PIDS,$w"; done

print_cpu_busy

if [ -n "${BENCH_HOLD:-}" ]; then
    case "$BENCH_HOLD" in *[!0-9]* | "") die "BENCH_HOLD must be a number of seconds" ;; esac
    [ "$BENCH_HOLD" -le 1800 ] || BENCH_HOLD=1800
    say "holding for ${BENCH_HOLD}s; Ctrl-C to end early"
    printf '%s\n' "BENCH_NGINX=http://127.0.0.1:$NGINX_PORT" "BENCH_NOTEBOX=$SERVED" \
        "BENCH_DIRECT=http://$UP_IP:8888" "BENCH_PREFIX=$PREFIX" "BENCH_TOKEN=$API_TOKEN" \
        "BENCH_NGINX_PIDS=$NGINX_PIDS" "BENCH_NOTEBOX_PIDS=$NOTEBOX_PID" "BENCH_BIN=$BENCH_BIN"
    sleep "$BENCH_HOLD" &
    BENCH_PID=$!
    wait "$BENCH_PID" || true
    BENCH_PID=""
    exit 0
fi

# 6. Measure.
OUT=${CARGO_TARGET_DIR:-$ROOT/target}/proxy-bench
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
if [ "${BENCH_PERF:-0}" = 1 ]; then
    if command -v perf >/dev/null; then
        perf record -q -F 999 -p "$NOTEBOX_PID" -o "$OUT/$STAMP.perf.data" >/dev/null 2>&1 &
        PERF_PID=$!
    else
        printf 'BENCH_PERF=1 but perf is not installed (apt-get install linux-perf); not profiling\n' >&2
    fi
fi
say "load generator (benches/proxy.rs, built by cargo bench --no-run)"
# In the background, with `wait`: bash runs the INT/TERM trap (and so the cleanup) during a
# `wait`, but not until a foreground command ends.
BENCH_TOKEN=$API_TOKEN BENCH_NGINX_PIDS=$NGINX_PIDS BENCH_NOTEBOX_PIDS=$NOTEBOX_PID \
    timeout 600 "$BENCH_BIN" --bench \
    --nginx "http://127.0.0.1:$NGINX_PORT" --notebox "$SERVED" "${DIRECT[@]}" \
    --prefix "$PREFIX" --json "$OUT/$STAMP.json" "$@" >"$OUT/$STAMP.txt" &
BENCH_PID=$!
BENCH_RC=0
wait "$BENCH_PID" || BENCH_RC=$?
BENCH_PID=""
cat "$OUT/$STAMP.txt"
if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    say "notebox's hottest functions during the run (perf, self time)"
    perf report -i "$OUT/$STAMP.perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
        | grep '%' | sed 's/  */ /g' | cut -c1-150 | head -n 40 | tee "$OUT/$STAMP.perf.txt" || true
fi
[ "$BENCH_RC" -le 1 ] || die "the load generator failed (exit $BENCH_RC)"

if [ "${BENCH_WRK:-1}" != 0 ]; then
    say "cross-check with wrk (1 thread, 32 connections, 5 s each)"
    for t in "nginx http://127.0.0.1:$NGINX_PORT" "notebox $SERVED"; do
        read -r name base <<<"$t"
        rps=$(timeout --foreground 30 wrk -t1 -c32 -d5s -H "Authorization: token $API_TOKEN" "$base${PREFIX}hello" \
            | awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "non-2xx:", $NF}' | paste -sd' ')
        printf 'wrk %-8s %s req/s\n' "$name" "$rps" | tee -a "$OUT/$STAMP.txt"
    done
fi
printf 'load average after the run: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/$STAMP.txt"
printf '\nresults: %s/%s.txt and .json\n' "$OUT" "$STAMP"
exit "$BENCH_RC"
