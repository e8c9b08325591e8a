# Shared by the benchmark scripts (benches/run-*.sh): sourced, not run. Sets up a
# throw-away Notebox (release build, its own data dir, the test image's catalog entry) and
# cleans up after it on exit, also on failure or Ctrl-C. The scripts set BENCH_NAME first.
# shellcheck shell=bash disable=SC2317 # functions are called indirectly (trap, wait_until)

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; exit 2; }

WORK=""
NOTEBOX_PID=""
NB_URL=""
API_TOKEN=""
INSTANCE=""
# Extra cleanup a script wants (a function name), run before Notebox stops.
BENCH_CLEANUP=""

bench_cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    [ -n "$BENCH_CLEANUP" ] && "$BENCH_CLEANUP"
    if [ -n "$NOTEBOX_PID" ] && kill -0 "$NOTEBOX_PID" 2>/dev/null; then
        kill -TERM "$NOTEBOX_PID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$NOTEBOX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NOTEBOX_PID" 2>/dev/null
        wait "$NOTEBOX_PID" 2>/dev/null
    fi
    if [ -n "$INSTANCE" ]; then
        local ids=()
        mapfile -t ids < <(docker ps -aq --filter "label=io.notebox.instance=$INSTANCE" 2>/dev/null)
        ((${#ids[@]})) && docker rm -f "${ids[@]}" >/dev/null 2>&1
    fi
    if [ -n "$WORK" ]; then
        if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" = 2 ]; then
            printf '%s: kept %s (config and logs)\n' "${BENCH_NAME:-bench}" "$WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls a command (bounded): wait_until SECONDS WHAT COMMAND...
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what"
        sleep 0.2
    done
}

# Docker, curl and the image ($BENCH_IMAGE, else the test image, built when missing).
bench_image() {
    command -v curl >/dev/null || die "curl is missing (apt-get install curl)"
    docker info >/dev/null 2>&1 || die "Docker is not reachable (docker info failed)"
    IMAGE=${BENCH_IMAGE:-notebox-test-jupyter:latest}
    if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
        say "building the test image"
        IMAGE=$(tests/image/build.sh | tail -n 1)
    fi
}

# The release binary (built before anything runs: the machine has few cores).
bench_build() {
    say "cargo build --release (notebox)"
    cargo build --release --locked --bin notebox
    NOTEBOX=${CARGO_TARGET_DIR:-$PWD/target}/release/notebox
}

# The machine, for the record.
bench_machine() {
    local cpu mem
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
    printf 'nproc %s · %s · %s RAM · kernel %s · load average %s · %s · notebox %s\n' \
        "$(nproc)" "${cpu:-unknown CPU}" "$mem" "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)" \
        "$(rustc -V)" "$(git describe --always --dirty 2>/dev/null || echo '?')"
}

# A config with two catalog images — "jupyter" (the image's JupyterLab) and "echo"
# (tests/upstream/echo.py in the same image) — and one machine type; extra TOML for
# [notebooks] comes as $1.
bench_config() {
    local notebooks_extra=${1:-}
    WORK=$(mktemp -d "/tmp/notebox-${BENCH_NAME:-bench}.XXXXXX")
    chmod 711 "$WORK"
    local echo_py
    echo_py=$(cat tests/upstream/echo.py)
    case "$echo_py" in *"'''"*) die "tests/upstream/echo.py contains ''' (cannot inline it as a TOML literal)" ;; esac
    cat >"$WORK/config.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "$WORK/data"

[notebooks]
ready_timeout = "90s"
# One bench member runs many notebooks at once (50 in run-memory.sh), and needs a port each.
max_running_per_user = 1000
$notebooks_extra

[gpu]
backend = "none"

[[images]]
id = "jupyter"
name = "Test Jupyter"
image = "$IMAGE"
launcher = "jupyter-lab"

[[images]]
id = "echo"
name = "Echo upstream (tests/upstream/echo.py)"
image = "$IMAGE"
launcher = "command"
command = ["python3", "-c", '''
$echo_py
''', "{base_url}"]

[[machines]]
id = "bench"
name = "Benchmark · 2 cores · 1 GB"
cpus = 2.0
memory_mib = 1024
gpus = 0
TOML
}

# Starts Notebox on the config; sets NB_URL, API_TOKEN (an admin token) and INSTANCE.
bench_start_notebox() {
    say "starting notebox"
    "$NOTEBOX" --config "$WORK/config.toml" serve >"$WORK/notebox.out" 2>"$WORK/notebox.log" &
    NOTEBOX_PID=$!
    listening() {
        kill -0 "$NOTEBOX_PID" 2>/dev/null || die "notebox exited: $(tail -n 20 "$WORK/notebox.log")"
        grep -q 'http://' "$WORK/notebox.out"
    }
    wait_until 30 "notebox to start" listening
    NB_URL=$(grep -m 1 -o 'http://[^ ]*' "$WORK/notebox.out")
    NB_URL=${NB_URL%/}
    healthy() { curl -sf --max-time 2 -o /dev/null "$NB_URL/healthz"; }
    wait_until 30 "notebox /healthz" healthy
    API_TOKEN=$("$NOTEBOX" --config "$WORK/config.toml" token create admin --name "${BENCH_NAME:-bench}" 2>/dev/null)
    [ -n "$API_TOKEN" ] || die "notebox token create admin printed no token"
    INSTANCE=$(sqlite_meta instance_id)
}

# A value of the meta table, read through notebox's own database (no sqlite3 needed):
# the instance id labels every container of this Notebox.
sqlite_meta() {
    python3 - "$WORK/data/notebox.db" "$1" <<'PY'
import sqlite3, sys
row = sqlite3.connect(sys.argv[1]).execute("SELECT value FROM meta WHERE key = ?", (sys.argv[2],)).fetchone()
print(row[0] if row else "")
PY
}

# api METHOD PATH [JSON]: Notebox's API with the admin token.
api() {
    local method=$1 path=$2 body=${3:-}
    if [ -n "$body" ]; then
        curl -sS --max-time 30 -X "$method" -H "Authorization: Bearer $API_TOKEN" \
            -H 'Content-Type: application/json' -d "$body" "$NB_URL$path"
    else
        curl -sS --max-time 30 -X "$method" -H "Authorization: Bearer $API_TOKEN" "$NB_URL$path"
    fi
}

# How busy the machine is without us (percent, 2 s sample): everything shares the cores.
cpu_busy() {
    local a b a1 a2 a3 a4 a5 a6 a7 a8 b1 b2 b3 b4 b5 b6 b7 b8
    read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ </proc/stat
    sleep 2
    read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ </proc/stat
    a=$((b1 + b2 + b3 + b6 + b7 + b8 - a1 - a2 - a3 - a6 - a7 - a8))
    b=$((a + b4 + b5 - a4 - a5))
    echo $((b > 0 ? 100 * a / b : 0))
}

# The line every bench prints before it measures.
print_cpu_busy() {
    printf 'CPU busy before the run (2 s sample, everything on the machine): %s%%\n' "$(cpu_busy)"
}

# Removes the containers a bench started itself, labelled io.notebox.bench=$1.
remove_bench_containers() {
    local ids=()
    mapfile -t ids < <(docker ps -aq --filter "label=io.notebox.bench=$1" 2>/dev/null)
    ((${#ids[@]})) && docker rm -f "${ids[@]}" >/dev/null 2>&1
}
