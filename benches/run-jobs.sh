#!/usr/bin/env bash
# The jobs runner on its own (docs/PERFORMANCE.md, "Jobs runner"): src/jobs/runner.py run
# in the test image as a Notebox job's container runs it, without Notebox.
#
#   benches/run-jobs.sh                   # as root, with Docker; 3–5 minutes on 2 CPUs
#   BENCH_RUNS=5 BENCH_TIMEOUT=900 benches/run-jobs.sh
#
# Each run is `docker run --rm --network none --user 1000:100` of the image with Notebox's
# mounts — /notebox-job read-only (run.py = src/jobs/runner.py, job.json with the default
# limits, input.ipynb), a new empty /notebooks — and `python3 /notebox-job/run.py`. Its time
# is docker run's wall time from the host (container, kernel start, cells, output.ipynb,
# kernel shutdown). Cases:
#   1. 1 trivial cell: the fixed cost of a notebook job.
#   2. 1 000 cells `x = i`; per cell = (case 2 − case 1) / 999.
#   3. the same cells through a plain jupyter_client loop (start the kernel, execute each
#      cell, wait for idle and the reply; BASELINE below) in the same container: per cell,
#      its loop timed inside; the runner's own overhead = case 2 − case 3.
#   4. 10 000 cells `x = i`, once: the acceptance figure (10 000 cells are handled).
#   5. 1 cell `print('x' * 50_000_000)`: the time, output.ipynb's size (the cell's outputs
#      are capped at max_cell_output_bytes, 1 MiB) and log.txt's (max_log_bytes, 64 MiB).
# Cases 1, 2, 3, 5 run BENCH_RUNS times (3), interleaved; the table has the medians. A run
# that fails (exit status, status.json, a cell not run, a size limit) or takes more than
# BENCH_TIMEOUT seconds (600) stops the script (exit status 2). The image:
# $TEST_JUPYTER_IMAGE, else notebox-test-jupyter:<first 12 hex of tests/image/build.sh's
# sha256>; make it with `tests/image/build.sh`. Needs root (/notebooks is uid 1000's),
# Docker, python3. The containers and the temp dir go on exit (lib.sh keeps the dir, and
# says so, when a run failed or BENCH_KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=run-jobs
# shellcheck source=benches/lib.sh
source benches/lib.sh
RUNS=${BENCH_RUNS:-3}
LIMIT=${BENCH_TIMEOUT:-600}
LABEL="io.notebox.bench=run-jobs-$$"
remove_containers() { docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f >/dev/null 2>&1; }
BENCH_CLEANUP=remove_containers

[ "$(id -u)" = 0 ] || die "run as root (the notebook folder must belong to uid 1000)"
docker info >/dev/null 2>&1 || die "Docker is not reachable (docker info failed)"
IMAGE=${TEST_JUPYTER_IMAGE:-notebox-test-jupyter:$(sha256sum tests/image/build.sh | cut -c1-12)}
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE: build it with tests/image/build.sh"
WORK=$(mktemp -d /tmp/notebox-run-jobs.XXXXXX) && chmod 711 "$WORK"

say "machine"
bench_machine
printf '%s, storage driver %s\nimage %s: %s\n' \
    "$(docker version --format 'Docker client {{.Client.Version}}, engine {{.Server.Version}}')" \
    "$(docker info --format '{{.Driver}}')" "$IMAGE" "$(docker run --rm --network none "$IMAGE" python3 -c \
    'import sys, jupyter_client as c, ipykernel as k; print(sys.version.split()[0], c.__version__, k.__version__)' |
    awk '{print "Python " $1 " · jupyter_client " $2 " · ipykernel " $3}')"
print_cpu_busy

# job CASE CELLS SOURCE: $WORK/job-CASE/ as Notebox writes it; "{i}" in SOURCE is the cell's number.
job() {
    mkdir "$WORK/job-$1" && cp src/jobs/runner.py "$WORK/job-$1/run.py"
    python3 - "$WORK/job-$1" "$2" "$3" <<'PY'
import json, sys
d, n, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cells = [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
          "source": src.replace("{i}", str(i))} for i in range(1, n + 1)]
json.dump({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
           "nbformat": 4, "nbformat_minor": 4}, open(f"{d}/input.ipynb", "w"), indent=1)
json.dump({"id": "bench", "mode": "notebook", "path": "bench.ipynb", "parameters": {},
           "output_dir": "/notebooks/jobs/bench", "max_output_bytes": 67108864,
           "max_log_bytes": 67108864, "max_cell_output_bytes": 1048576}, open(f"{d}/job.json", "w"))
PY
}
job 1 1 'x = 1'
job 2 1000 'x = {i}'
job 4 10000 'x = {i}'
job 5 1 "print('x' * 50_000_000)"
cp -r "$WORK/job-2" "$WORK/job-3" # the baseline's container gets the same mounts

# The baseline: what any client of jupyter_client does, with the runner's execute options.
BASELINE='
import sys, time
from jupyter_client import KernelManager
km = KernelManager(kernel_name="python3"); km.start_kernel()
kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=120)
t0 = time.monotonic()
for i in range(1, int(sys.argv[1]) + 1):
    mid = kc.execute(f"x = {i}", store_history=True, allow_stdin=False, stop_on_error=True)
    while (m := kc.get_iopub_msg(timeout=60))["parent_header"].get("msg_id") != mid \
            or m["content"].get("execution_state") != "idle": pass
    while (r := kc.get_shell_msg(timeout=60))["parent_header"].get("msg_id") != mid: pass
    assert r["content"]["status"] == "ok", r["content"]
loop = time.monotonic() - t0
kc.stop_channels(); km.shutdown_kernel(now=False)
print(f"baseline: {i} cells ran · loop {loop * 1e3:.0f} ms")'

# check CASE: the runner's results in the last run's /notebooks (a line, or exit status 1).
check() {
    python3 - "$WORK/nb/jobs/bench" "$1" <<'PY'
import json, os, sys
d, case = sys.argv[1], sys.argv[2]
st, nb = json.load(open(f"{d}/status.json")), json.load(open(f"{d}/output.ipynb"))
cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
ran = sum(c["execution_count"] is not None for c in cells)
size, log = os.path.getsize(f"{d}/output.ipynb"), os.path.getsize(f"{d}/log.txt")
if st["state"] != "succeeded" or ran != len(cells):
    sys.exit(f"status {st['state']} ({st['message']}), {ran} of {len(cells)} cells ran")
cap = (1 << 20) + 8192 if case == "5" else 64 << 20  # one cell's cap (+ the notebook), the notebook's
if size > cap or log > (64 << 20) + 100:
    sys.exit(f"over a limit: output.ipynb {size} B, log.txt {log} B")
print(f"{ran} cells ran · output.ipynb {size} B · log.txt {log} B · {st['message']}")
PY
}

# run CASE COMMAND...: one container on job-CASE with a new /notebooks; its wall time (ms)
# goes to MS and is added to T_CASE; the results are checked (the baseline checks its own).
run() {
    local c=$1 t0 t1 line rc=0
    shift
    rm -rf "$WORK/nb" && mkdir "$WORK/nb" && chown 1000:100 "$WORK/nb"
    t0=$EPOCHREALTIME
    timeout "$LIMIT" docker run --rm --network none --user 1000:100 --label "$LABEL" \
        -v "$WORK/job-$c:/notebox-job:ro" -v "$WORK/nb:/notebooks" -w /notebooks \
        "$IMAGE" "$@" >"$WORK/out-$c.txt" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    [ "$rc" = 0 ] || die "case $c: exit status $rc (124: over ${LIMIT}s): $(tail -c 600 "$WORK/out-$c.txt")"
    MS=$(((${t1//[.,]/} - ${t0//[.,]/}) / 1000))
    declare -g "T_$c+= $MS"
    if [ "$c" = 3 ]; then line=$(tail -n 1 "$WORK/out-3.txt"); else line=$(check "$c" 2>&1) || die "case $c: $line"; fi
    printf '  case %s: %6d ms   %s\n' "$c" "$MS" "$line"
    [ "$c" != 3 ] || LOOP+=" $(grep -o 'loop [0-9]*' <<<"$line" | cut -d' ' -f2)"
    [ "$c" != 5 ] || SIZES=$(grep -o 'output.ipynb [0-9]* B · log.txt [0-9]* B' <<<"$line")
}
JOB=(python3 /notebox-job/run.py)
LOOP="" DIFF="" SIZES=""
for r in $(seq "$RUNS"); do
    say "round $r of $RUNS (cases 1, 2, 3, 5)"
    run 1 "${JOB[@]}"
    run 2 "${JOB[@]}" && W=$MS
    run 3 python3 -c "$BASELINE" 1000 && DIFF+=" $((W - MS))"
    run 5 "${JOB[@]}"
done
say "case 4: 10 000 cells, once"
run 4 "${JOB[@]}"

med() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
# shellcheck disable=SC2086 # space-separated lists of numbers
read -r W1 W2 W3 W4 W5 L3 D < <(echo "$(med $T_1) $(med $T_2) $(med $T_3) $(med $T_4) $(med $T_5) $(med $LOOP) $(med $DIFF)")
pc() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {printf "%.2f ms", (a - b) / n}'; }
say "results (median of $RUNS runs, case 4 one run; $(nproc) CPUs)"
cat <<EOF
| case | wall time | per cell | how |
|---|---|---|---|
| 1. kernel start + 1 trivial cell | $W1 ms | | the fixed cost of a notebook job |
| 2. 1 000 cells \`x = i\` (runner) | $W2 ms | $(pc "$W2" "$W1" 999) | (case 2 − case 1) / 999 |
| 3. the same, plain jupyter_client loop | $W3 ms | $(pc "$L3" 0 1000) | its loop, $L3 ms, timed inside |
| 4. 10 000 cells \`x = i\` (runner, 1 run) | $W4 ms | $(pc "$W4" "$W1" 9999) | (case 4 − case 1) / 9 999 |
| 5. 1 cell printing 50 MB | $W5 ms | | $SIZES |

The runner's own overhead over the plain loop (case 2 − case 3), 1 000 cells: $((W2 - W3)) ms by
the medians, $D ms by the median of the rounds' differences; per cell (the fixed costs out)
$(awk -v a="$W2" -v b="$W1" -v l="$L3" 'BEGIN {printf "%.2f ms", (a - b) / 999 - l / 1000}').
EOF
