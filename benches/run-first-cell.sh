#!/usr/bin/env bash
# From "Create and start" to the first answered cell, as a member clicks it, in headless
# Chromium (issue 28; docs/PERFORMANCE.md, "First cell").
#
#   benches/run-first-cell.sh                 # 5 runs
#   BENCH_RUNS=10 benches/run-first-cell.sh
#
# Builds the release binary, starts Notebox with a throw-away data dir (notebooks on their
# own ports, the default), adds a member, pulls nothing (the test image is local, a warm
# image), then benches/first_cell.py clicks through each run and prints every step's time
# since the click. Target: the cell answered ≤ 3 s after "Create and start" (median).
# Exit 0 when met, 1 when not, 2 when it could not run. Needs Docker, Rust, curl, python3,
# chromium and chromium-driver (apt).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=run-first-cell
# shellcheck source=benches/lib.sh
source benches/lib.sh
RUNS=${BENCH_RUNS:-5}
command -v chromedriver >/dev/null || die "chromedriver is missing (apt-get install chromium chromium-driver)"
DRIVER_PID=""
stop_driver() { [ -z "$DRIVER_PID" ] || kill "$DRIVER_PID" 2>/dev/null || true; }
BENCH_CLEANUP=stop_driver

bench_image
bench_build
say "machine"
bench_machine
bench_config
bench_start_notebox
echo "first-cell-password" | "$NOTEBOX" --config "$WORK/config.toml" user add member --password-stdin >/dev/null
TOKEN=$("$NOTEBOX" --config "$WORK/config.toml" token create member --name first-cell 2>/dev/null)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
chromedriver --port="$PORT" >"$WORK/chromedriver.log" 2>&1 &
DRIVER_PID=$!
driver_up() { curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/status"; }
wait_until 15 "chromedriver" driver_up
say "$RUNS runs"
python3 benches/first_cell.py "$NB_URL" "http://127.0.0.1:$PORT" member first-cell-password "$TOKEN" "$RUNS"
