#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests drive
# (when run as root), builds the Jupyter test image once per machine, runs every test.
#
#   tests/run-all.sh            # everything
#   tests/run-all.sh foundation # only tests whose name matches (any cargo test filter works;
#                               # the package checks then are skipped)
#
# The test image (mostly downloads) builds while the tests compile. Nothing else runs
# beside the tests: on a 2-core machine a build beside them, even at idle CPU priority,
# made JupyterLab miss a test's start deadline (docs/PERFORMANCE.md, "Suite time").
# Each stage's time is printed at the end.
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
    [ -n "${IMAGE_PID:-}" ] && kill "$IMAGE_PID" 2>/dev/null
    [ -n "${PREPARE_PID:-}" ] && kill "$PREPARE_PID" 2>/dev/null
    exit "$rc"
}
trap report EXIT

PACKAGE=0
[ "$#" -eq 0 ] && PACKAGE=1

# 1. System packages the tests use: mmdebstrap (test image), Chromium and its driver
#    (browser tests), Prometheus (it scrapes /metrics in tests/it/usage.rs), a private
#    registry with htpasswd logins (tests/it/secrets.rs), OpenLDAP's server and tools and
#    Python's venv (the directory tests, tests/it/directory.rs), e2fsprogs (mkfs.ext4 for the
#    full-disk test's loop filesystem, tests/it/full_disk.rs); for the package
#    checks also lintian and curl (one apt run for all).
stage_start "system packages"
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v prometheus >/dev/null || need+=(prometheus)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
[ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapadd >/dev/null || need+=(ldap-utils)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ "$PACKAGE" = 1 ]; then
  command -v lintian >/dev/null || need+=(lintian)
  command -v curl >/dev/null || need+=(curl)
fi
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # The tests start their own slapd; the one the package starts is not needed.
    if pgrep -x slapd >/dev/null; then
      (invoke-rc.d slapd stop || pkill -x slapd) >/dev/null 2>&1 || true
    fi
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
# Likewise what the package checks need (cargo-deb, the Debian root file system; only when
# they run), at the lowest CPU priority: it takes the core the compile leaves idle.
PREPARE_PID=
if [ "$PACKAGE" = 1 ]; then
  nice -n 19 tests/package/run.sh --prepare >"$LOGS/package-prepare.log" 2>&1 &
  PREPARE_PID=$!
fi

# The OpenID Connect provider the directory tests sign in with (PyPI's
# oidc-provider-mock in a venv under target/, made once per checkout, ~15 s).
stage_start "OIDC test provider (venv)"
tests/oidc_provider/setup.sh
stage_end

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

# 5. Every test: unit tests, integration tests against the real server, Docker, Chromium.
#    The integration tests are one binary (tests/it/, one module per area): one link, and
#    a file whose tests mostly wait no longer runs alone. Four tests at a time on two
#    cores: many tests wait (an idle timeout, a schedule's minute, a booking's window)
#    while others work; at two at a time both cores were idle 46 % of the stage
#    (vmstat), at four 13 %, and the integration tests took 427 s instead of 575 s
#    (docs/PERFORMANCE.md, "Suite time"). NOTEBOX_TEST_THREADS sets another number.
stage_start "cargo test"
cargo test --locked --all-targets -- --test-threads="${NOTEBOX_TEST_THREADS:-4}" "$@"
stage_end

# 6. The .deb: build it, lint it, install it into a fresh Debian 12 root (upgrade, purge,
#    and under a real systemd). Skipped when a filter was given. It packages the binary
#    the tests above just ran (target/debug/notebox, stripped by cargo-deb): a release
#    build here would compile every dependency again (~5 of this stage's 7 minutes on
#    2 cores) to check the same packaging. `tests/package/run.sh` alone checks the
#    release build, as the README builds it.
if [ "$PACKAGE" = 1 ]; then
  stage_start "package checks (of the tested debug build)"
  if ! wait "$PREPARE_PID"; then
    PREPARE_PID=
    cat "$LOGS/package-prepare.log" >&2
    say "preparing the package checks failed (log above)"
    exit 1
  fi
  PREPARE_PID=
  NOTEBOX_PACKAGE_PROFILE=dev tests/package/run.sh
  stage_end
fi
