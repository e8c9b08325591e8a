#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests drive
# (when run as root), builds the Jupyter test image once per machine, runs every test.
#
#   tests/run-all.sh            # everything
#   tests/run-all.sh foundation # only tests whose name matches (any cargo test filter works;
#                               # the package checks then are skipped)
#
# Work runs beside other work where that is faster: the test image (mostly downloads)
# builds while the tests compile, and the package checks' preparation (cargo-deb, the
# Debian root file system, the release build) runs at idle CPU priority while the tests
# run, in the gaps they leave. Each stage's time is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*" >&2; }

T0=$SECONDS
STAGES=()
stage_start() {
    STAGE_NAME=$1
    STAGE_T=$SECONDS
    say "$1"
}
stage_end() { STAGES+=("$(printf '%-44s %4d s' "$STAGE_NAME" $((SECONDS - STAGE_T)))"); }
report() {
    local rc=$?
    if ((${#STAGES[@]})); then
        printf '\n==> stage times (wall clock)\n' >&2
        printf '  %s\n' "${STAGES[@]}" >&2
        printf '  %-44s %4d s\n' "total" $((SECONDS - T0)) >&2
    fi
    # The preparation runs in a session of its own: this ends it with every compiler.
    [ -n "${BACKGROUND:-}" ] && kill -- -"$BACKGROUND" 2>/dev/null
    [ -n "${IMAGE_PID:-}" ] && kill "$IMAGE_PID" 2>/dev/null
    exit "$rc"
}
trap report EXIT

PACKAGE=0
[ "$#" -eq 0 ] && PACKAGE=1

# 1. System packages the tests use: mmdebstrap (test image), Chromium and its driver
#    (browser tests), Prometheus (it scrapes /metrics in tests/usage.rs); for the package
#    checks also lintian and curl (one apt run for all).
stage_start "system packages"
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v prometheus >/dev/null || need+=(prometheus)
if [ "$PACKAGE" = 1 ]; then
  command -v lintian >/dev/null || need+=(lintian)
  command -v curl >/dev/null || need+=(curl)
fi
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    say "missing ${need[*]}: install them with apt-get (as root) and run again"
    exit 1
  fi
fi
stage_end

# 2. Docker must answer: the notebook tests run real containers.
if ! docker info >/dev/null 2>&1; then
  say "Docker is not reachable (docker info failed): start the Docker engine and run again"
  exit 1
fi

LOGS=target/run-all
mkdir -p "$LOGS"

# 3. The Jupyter test image, built from Debian packages (no registry needed), once per
#    machine: in the background while the tests compile (it mostly downloads).
tests/image/build.sh >"$LOGS/image.out" 2>"$LOGS/image.log" &
IMAGE_PID=$!

stage_start "compile the tests (debug)"
cargo test --locked --all-targets --no-run
stage_end

stage_start "test image (built beside the compile)"
if ! wait "$IMAGE_PID"; then
  IMAGE_PID=
  cat "$LOGS/image.log" >&2
  say "building the test image failed (log above)"
  exit 1
fi
IMAGE_PID=
TEST_JUPYTER_IMAGE=$(tail -n 1 "$LOGS/image.out")
export TEST_JUPYTER_IMAGE
say "using $TEST_JUPYTER_IMAGE"
stage_end

# 4. The package checks' preparation, at idle priority, once the tests are compiled: the
#    tests leave the cores idle at times (waiting on containers and browsers), and the
#    release build, the Debian root file system and cargo-deb (when missing) use those
#    gaps instead of running after the tests. (Started beside the compile instead, it made
#    the compile twice as long: docs/PERFORMANCE.md, "Suite time".)
if [ "$PACKAGE" = 1 ]; then
  # SCHED_IDLE (inherited by every compiler it starts); nice 19 where chrt is missing.
  idle=(nice -n 19)
  chrt --idle 0 true 2>/dev/null && idle=(chrt --idle 0)
  setsid "${idle[@]}" bash -c 'set -e; tests/package/run.sh --prepare; cargo build --release --locked' \
    >"$LOGS/package-prepare.log" 2>&1 &
  BACKGROUND=$!
fi

# 5. Every test: unit tests, integration tests against the real server, Docker, Chromium.
#    One binary at a time, two tests at a time: the tests themselves keep both cores busy
#    (JupyterLab starts, Chromium, the symlink races), and running two binaries side by side
#    made them no faster here but made Jupyter miss short start deadlines
#    (docs/PERFORMANCE.md, "Suite time").
stage_start "cargo test"
cargo test --locked --all-targets -- --test-threads=2 "$@"
stage_end

# 6. The .deb: build it, lint it, install it into a fresh Debian 12 root (upgrade, purge,
#    and under a real systemd). Skipped when a filter was given.
if [ "$PACKAGE" = 1 ]; then
  stage_start "package: the rest of its preparation"
  # Nothing else runs now: at idle priority the rest of the build still gets every core.
  if ! wait "$BACKGROUND"; then
    BACKGROUND=
    tail -n 40 "$LOGS/package-prepare.log" >&2
    say "preparing the package checks failed (log above, whole in $LOGS/package-prepare.log)"
    exit 1
  fi
  BACKGROUND=
  stage_end
  stage_start "package checks"
  tests/package/run.sh
  stage_end
fi
