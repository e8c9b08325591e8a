#!/usr/bin/env bash
# What the idle-reclaim activity sampler costs (docs/PERFORMANCE.md, issue 12): N running
# notebooks with real Jupyter servers, Notebox's CPU measured over the same window with
# the sampler at its default interval (5 s) and with it effectively off (1 h), in one run.
#
#   benches/run-activity.sh                  # 20 notebooks, 60 s windows
#   BENCH_NOTEBOOKS=50 benches/run-activity.sh   # issue 28's figure: 50 running
#   BENCH_NOTEBOOKS=5 BENCH_WINDOW=30 benches/run-activity.sh
#
# Each sample of a notebook is two requests to its Jupyter (kernels, terminals), one read
# of its cgroup's CPU counter and a look at the GPU telemetry already in memory. The table
# shows the CPU time (percent of one core) of notebox, of dockerd and of all the notebook
# containers together in each window; the sampler's cost is the difference between the
# windows. Needs: a running Docker engine, Rust, curl. The image is $BENCH_IMAGE, else the
# test image (built with tests/image/build.sh when missing). BENCH_KEEP=1 keeps the temp
# dir (config, logs).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=run-activity
# shellcheck source=benches/lib.sh
source benches/lib.sh
N=${BENCH_NOTEBOOKS:-20}
WINDOW=${BENCH_WINDOW:-60}

bench_image
bench_build
say "machine"
bench_machine

WORK=$(mktemp -d /tmp/notebox-activity-bench.XXXXXX)
config() { # config INTERVAL
    cat >"$WORK/config.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$WORK/data"

[notebooks]
ready_timeout = "300s"
activity_interval = "$1"
default_auto_shutdown = "never"
max_running_per_user = $N

[gpu]
backend = "none"

[[images]]
id = "test"
name = "Test Jupyter"
image = "$IMAGE"
launcher = "jupyter-lab"

[[machines]]
id = "small"
name = "Small"
cpus = 0.5
memory_mib = 512
gpus = 0
idle_timeout = "never"
EOF
}

stop_notebox() {
    kill -TERM "$NOTEBOX_PID"
    wait "$NOTEBOX_PID" 2>/dev/null || true
    NOTEBOX_PID=""
}

running_count() {
    curl -s --max-time 10 -H "Authorization: Bearer $API_TOKEN" "$NB_URL/api/v1/notebooks" \
        | grep -o '"state":"running"' | wc -l
}

# CPU ticks (user + system) of a process, and of every notebook container together.
ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
containers_ns() {
    local total=0 id pid f v
    for id in $(docker ps -q --filter "label=io.notebox.instance=$INSTANCE"); do
        pid=$(docker inspect -f '{{.State.Pid}}' "$id")
        f=""
        while IFS=: read -r _ ctrl path; do
            case ",$ctrl," in *,cpuacct,*) f=/sys/fs/cgroup/cpuacct$path/cpuacct.usage ;; esac
            if [ -z "$ctrl" ] && [ -z "$f" ] && [ -f "/sys/fs/cgroup$path/cpu.stat" ]; then
                f=/sys/fs/cgroup$path/cpu.stat
            fi
        done <"/proc/$pid/cgroup"
        case "$f" in
            */cpuacct.usage) v=$(cat "$f") ;;
            */cpu.stat) v=$(($(awk '/^usage_usec/ {print $2}' "$f") * 1000)) ;;
            *) v=0 ;;
        esac
        total=$((total + v))
    done
    echo "$total"
}

HZ=$(getconf CLK_TCK)
DOCKERD=$(pgrep -x dockerd | head -n 1 || true)
measure() { # measure LABEL
    local n0 d0 c0 n1 d1 c1
    sleep 10 # settle
    n0=$(ticks_of "$NOTEBOX_PID"); d0=$( [ -n "$DOCKERD" ] && ticks_of "$DOCKERD" || echo 0); c0=$(containers_ns)
    sleep "$WINDOW"
    n1=$(ticks_of "$NOTEBOX_PID"); d1=$( [ -n "$DOCKERD" ] && ticks_of "$DOCKERD" || echo 0); c1=$(containers_ns)
    awk -v l="$1" -v n=$((n1 - n0)) -v d=$((d1 - d0)) -v c=$((c1 - c0)) -v hz="$HZ" -v w="$WINDOW" \
        'BEGIN { printf "%-28s notebox %6.2f %%   dockerd %6.2f %%   containers %6.2f %%   (of one core)\n",
                 l, 100 * n / hz / w, 100 * d / hz / w, 100 * c / 1e9 / w }' | tee -a "$WORK/results.txt"
}

say "starting notebox and $N notebooks"
config "5s"
# Sets NB_URL, API_TOKEN and INSTANCE (whose containers lib.sh removes on exit).
bench_start_notebox
FIRST=""
for i in $(seq "$N"); do
    created=$(curl -sS --max-time 30 -X POST -H "Authorization: Bearer $API_TOKEN" \
        -H 'Content-Type: application/json' \
        -d "{\"name\": \"bench $i\", \"image\": \"test\", \"machine\": \"small\"}" \
        "$NB_URL/api/v1/notebooks")
    [ -n "$FIRST" ] || FIRST=$(printf '%s' "$created" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -n 1)
done
[ -n "$FIRST" ] || die "no notebook was created: $created"
all_running() { [ "$(running_count)" -ge "$N" ]; }
wait_until 600 "$N notebooks to be running" all_running

say "measuring ${WINDOW}s with the sampler every 5 s"
measure "sampler every 5 s"
say "restarting notebox with the sampler every hour (the notebooks keep running)"
stop_notebox
config "1h"
bench_start_notebox
measure "sampler off (every 1 h)"
say "restarting notebox with the sampler every second"
stop_notebox
config "1s"
bench_start_notebox
measure "sampler every 1 s"

say "results ($N running notebooks, ${WINDOW}s windows)"
cat "$WORK/results.txt"
