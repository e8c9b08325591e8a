#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what the tests drive
# (when run as root), builds the Jupyter test image once per machine, runs every test.
#
#   tests/run-all.sh            # everything
#   tests/run-all.sh foundation # only tests whose name matches (any cargo test filter works;
#                               # the package checks then are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*" >&2; }

# 1. System packages the tests use: mmdebstrap (test image), Chromium and its driver
#    (browser tests), Prometheus (it scrapes /metrics in tests/usage.rs).
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v prometheus >/dev/null || need+=(prometheus)
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

# 2. Docker must answer: the notebook tests run real containers.
if ! docker info >/dev/null 2>&1; then
  say "Docker is not reachable (docker info failed): start the Docker engine and run again"
  exit 1
fi

# 3. The Jupyter test image, built from Debian packages (no registry needed), once.
say "test image"
TEST_JUPYTER_IMAGE=$(tests/image/build.sh | tail -n 1)
export TEST_JUPYTER_IMAGE
say "using $TEST_JUPYTER_IMAGE"

# 4. Every test: unit tests, integration tests against the real server, Docker, Chromium.
say "cargo test"
cargo test --locked --all-targets -- --test-threads=2 "$@"

# 5. The .deb: build it, lint it, install it into a fresh Debian 12 root (upgrade, purge,
#    and under a real systemd). Skipped when a filter was given.
if [ "$#" -eq 0 ]; then
  say "package"
  tests/package/run.sh
fi
