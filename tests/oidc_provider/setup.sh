#!/bin/sh
# Sets up the Python virtual environment the OpenID Connect tests run their provider
# from (tests/oidc_provider/provider.py wraps PyPI's oidc-provider-mock).
#
#     tests/oidc_provider/setup.sh [VENV_DIR]
#
# VENV_DIR defaults to target/oidc-venv under the repository root (where the Rust
# fixture, tests/common/oidc.rs, looks unless OIDC_TEST_VENV says otherwise). Does
# nothing when the venv already imports oidc_provider_mock, so it is cheap to run
# before every test run. Needs python3 with venv, and PyPI (once, ~10 s).
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-$repo/target/oidc-venv}

# Pinned: the mock, and the libraries whose internals provider.py hooks into (authlib
# signs the ID token through joserfc's jwt.encode; see provider.py's Forge).
packages="oidc-provider-mock==0.3.4 authlib==1.9.10 joserfc==1.8.0 flask==3.1.3 werkzeug==3.1.9"

say() { echo "oidc setup: $*" >&2; }

# Whether the venv works. (authlib turns its deprecation warnings back on as it is
# imported, so `python -W ignore` is not enough to keep them quiet.)
check='import warnings, authlib.deprecate; warnings.simplefilter("ignore"); import oidc_provider_mock'

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
    say "$venv is ready"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating the virtual environment $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
fi
say "installing $packages"
"$venv/bin/pip" install --quiet --disable-pip-version-check $packages >&2
"$venv/bin/python" -c "$check"
say "$venv is ready"
