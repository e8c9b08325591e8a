#!/usr/bin/env bash
# A burst: 20 notebooks created in the same second by 10 members, against 20 raw
# `docker run`s of the same container started the same way (issue 28; docs/PERFORMANCE.md,
# "Bursts").
#
#   benches/run-burst.sh                      # 20 notebooks, 10 members
#   BENCH_BURST=30 BENCH_MEMBERS=15 benches/run-burst.sh
#
# Notebox: 20 threads wait at one barrier, then each POSTs /api/v1/notebooks (two per
# member) and polls its notebook every 100 ms until "running". Meanwhile one more thread
# GETs /api/v1/notebooks and /api/v1/gpus in turn, every 50 ms, and records each
# answer's time: the pages' latency during the burst. Raw Docker: the container Notebox
# made for a warm-up notebook (same image, command, environment, user, mounts, limits,
# network), created and started by 20 threads at one barrier through the engine's API
# (as `docker run -d` does), each then asking Jupyter's /api/status every 100 ms until 200.
# Target: the last Notebox notebook running within 10 % of the last raw container
# answering; the pages' p99 at most 100 ms. Exit 0 when both are met, 1 when not, 2 when
# it could not run. Needs Docker, Rust, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=run-burst
# shellcheck source=benches/lib.sh
source benches/lib.sh
BURST=${BENCH_BURST:-20}
MEMBERS=${BENCH_MEMBERS:-10}
remove_raw() { remove_bench_containers burst-raw; }
BENCH_CLEANUP=remove_raw

bench_image
bench_build
say "machine"
bench_machine
print_cpu_busy
bench_config
bench_start_notebox
say "$MEMBERS members"
TOKENS=()
for i in $(seq "$MEMBERS"); do
    echo "burst-password-$i" | "$NOTEBOX" --config "$WORK/config.toml" user add "m$i" --password-stdin >/dev/null 2>&1
    TOKENS+=("$("$NOTEBOX" --config "$WORK/config.toml" token create "m$i" --name burst 2>/dev/null)")
done

say "a burst of $BURST notebooks, then $BURST raw containers"
RC=0
python3 - "$NB_URL" "$BURST" "$API_TOKEN" "${TOKENS[@]}" <<'PY' || RC=$?
import statistics, sys, threading, time
sys.path.insert(0, "benches")
from raw_docker import RawSpec, containers_of, docker, notebox_api

base, burst, admin, tokens = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
TIMEOUT = 180.0
api = notebox_api(base)

def wait_running(token, nid, t0):
    while True:
        state = api(token, "GET", f"/api/v1/notebooks/{nid}")["state"]
        if state == "running":
            return time.perf_counter() - t0
        if state == "failed" or time.perf_counter() - t0 > TIMEOUT:
            raise SystemExit(f"notebook {nid} did not start: {state}")
        time.sleep(0.1)

# The warm-up notebook: its container is the raw side's configuration.
t0 = time.perf_counter()
warm = api(admin, "POST", "/api/v1/notebooks", {"name": "warm-up", "image": "jupyter", "machine": "bench"})["id"]
print(f"warm-up notebook running after {wait_running(admin, warm, t0):.2f} s", flush=True)
raw_spec = RawSpec(api, admin, warm, "burst-raw")

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] * 1e3

# --- Notebox: the burst, and the pages' latency meanwhile.
done, lat, errors = threading.Event(), [], []
def pages():
    paths = ["/api/v1/notebooks", "/api/v1/gpus"]
    i = 0
    while not done.is_set():
        s = time.perf_counter()
        api(admin, "GET", paths[i % 2]); i += 1
        lat.append(time.perf_counter() - s)
        time.sleep(0.05)
barrier = threading.Barrier(burst + 1)
took, ids = [None] * burst, [None] * burst
def member(k):
    token = tokens[k % len(tokens)]
    try:
        barrier.wait()
        t0 = time.perf_counter()
        nid = api(token, "POST", "/api/v1/notebooks", {"name": f"burst-{k}", "image": "jupyter", "machine": "bench"})["id"]
        ids[k] = (token, nid)
        took[k] = wait_running(token, nid, t0)
    except BaseException as e:
        errors.append(f"notebook {k}: {e}")
prober = threading.Thread(target=pages); prober.start()
threads = [threading.Thread(target=member, args=(k,)) for k in range(burst)]
for t in threads: t.start()
time.sleep(0.5); barrier.wait()
for t in threads: t.join()
done.set(); prober.join()
if errors:
    raise SystemExit("\n".join(errors))
print(f"notebox: {burst} notebooks ({len(tokens)} members) all running after {max(took):.2f} s "
      f"(first {min(took):.2f} s, median {statistics.median(took):.2f} s)")
print(f"pages during the burst: {len(lat)} GETs, p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat) * 1e3:.1f} ms")
for token, nid in ids:
    api(token, "DELETE", f"/api/v1/notebooks/{nid}")
deadline = time.time() + 120
while any(containers_of(nid) for _, nid in ids):
    if time.time() > deadline:
        raise SystemExit("the burst's notebooks were not removed")
    time.sleep(0.5)
time.sleep(3)

# --- Raw Docker: the same containers, started the same way.
bodies = [raw_spec.body(f"burst-{k}") for k in range(burst)]
raw_took, rids = [None] * burst, [None] * burst
barrier = threading.Barrier(burst + 1)
def raw(k):
    try:
        barrier.wait()
        t0 = time.perf_counter()
        rid = docker("POST", f"/containers/create?name=notebox-burst-raw-{k}", bodies[k])["Id"]
        rids[k] = rid
        docker("POST", f"/containers/{rid}/start")
        ip = raw_spec.ip_of(rid)
        while not raw_spec.answers(ip):
            if time.perf_counter() - t0 > TIMEOUT:
                raise SystemExit(f"raw container {rid[:12]} did not answer")
            time.sleep(0.1)
        raw_took[k] = time.perf_counter() - t0
    except BaseException as e:
        errors.append(f"raw {k}: {e}")
threads = [threading.Thread(target=raw, args=(k,)) for k in range(burst)]
for t in threads: t.start()
time.sleep(0.5); barrier.wait()
for t in threads: t.join()
for rid in rids:
    if rid:
        docker("DELETE", f"/containers/{rid}?force=1")
raw_spec.remove_dirs()
if errors:
    raise SystemExit("\n".join(errors))
print(f"raw docker: {burst} containers all answering after {max(raw_took):.2f} s "
      f"(first {min(raw_took):.2f} s, median {statistics.median(raw_took):.2f} s)")
ratio = max(took) / max(raw_took)
print(f"\nthe last notebook / the last raw container: {ratio:.3f} "
      f"(target ≤ 1.10 — {'PASS' if ratio <= 1.10 else 'FAIL'}); pages' p99 {pct(lat, 99):.1f} ms "
      f"(target ≤ 100 ms — {'PASS' if pct(lat, 99) <= 100 else 'FAIL'})")
sys.exit(0 if ratio <= 1.10 and pct(lat, 99) <= 100 else 1)
PY
exit "$RC"
