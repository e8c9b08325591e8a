#!/usr/bin/env bash
# Build the local Jupyter test image for Notebox's integration tests without
# pulling from any container registry: mmdebstrap makes a minimal Debian rootfs
# from the host's own apt sources, a customize hook pip-installs a pinned
# JupyterLab stack into it, and the tarball is fed to `docker import`.
#
#   IMAGE=$(tests/image/build.sh | tail -n1)
#
# The tag is notebox-test-jupyter:<first 12 hex of sha256 of this file> (plus
# :latest), so editing this file triggers a rebuild and an existing image is
# reused (fast path). Progress goes to stderr; the image reference is always
# the last line of stdout.
#
# Needs: root, docker, mmdebstrap, flock; network access to the Debian mirror
# of the host's apt sources and to PyPI (or $PIP_INDEX_URL).
set -euo pipefail

START=$SECONDS
log() { printf '[notebox-test-image] %s\n' "$*" >&2; }

REPO=notebox-test-jupyter
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$(sha256sum "$SELF" | cut -c1-12)
IMAGE="$REPO:$HASH"

have_image() { docker image inspect "$IMAGE" >/dev/null 2>&1; }

if have_image; then
    log "test image $IMAGE already built"
    echo "$IMAGE"
    exit 0
fi

# One build per machine at a time; a concurrent caller waits, then reuses it.
exec 9>"${TMPDIR:-/tmp}/notebox-test-jupyter.lock"
if ! flock -n 9; then
    log "another build of the test image is running; waiting for it"
    flock 9
fi
if have_image; then
    log "test image $IMAGE already built (by a concurrent run)"
    echo "$IMAGE"
    exit 0
fi

for tool in docker mmdebstrap; do
    command -v "$tool" >/dev/null || { log "missing required tool: $tool"; exit 1; }
done

# Debian packages: only the base. Bookworm's jupyter-server (1.23) is too old
# for JupyterLab 4 (needs jupyter_server >= 2.4), and Debian's
# python3-ipykernel/python3-jupyter-* under PyPI's jupyter_server 2.x works
# but is 56 MB bigger (python3-ipykernel pulls gdb, lxml, libicu) and runs a
# set of versions nobody tested together. So the whole Jupyter stack
# (ipykernel, terminado, pyzmq, tornado, ...) comes from PyPI, pinned below.
DEB_PACKAGES=python3,python3-pip,ca-certificates,procps

# PyPI: what is asked for, and the complete pinned set pip resolves it to
# (`pip freeze --path /usr/local/lib/python3.11/dist-packages` in the image).
# All are wheels (--only-binary); nothing is compiled.
# rfc3987 is there only for start-up speed: with it jsonschema skips importing
# rfc3987_syntax, which compiles ~35 Lark parsers at import (~0.7-1 s of every
# server start; jupyter_server issue #1559).
PIP_REQUIREMENTS='jupyterlab==4.6.6 jupyter-server==2.21.1 ipykernel==7.4.0 terminado==0.18.1 rfc3987==1.3.8'
PIP_CONSTRAINTS='
anyio==4.16.0
argon2-cffi==25.1.0
argon2-cffi-bindings==26.2.0
arrow==1.4.0
asttokens==3.0.2
async-lru==2.4.0
attrs==26.1.0
babel==2.18.0
beautifulsoup4==4.15.0
bleach==6.4.0
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
comm==0.2.3
debugpy==1.8.22
defusedxml==0.7.1
executing==2.3.0
fastjsonschema==2.22.3
fqdn==1.6.0
h11==0.16.0
httpcore==1.0.9
httpx==0.28.1
idna==3.20
ipykernel==7.4.0
ipython==9.18.1
ipython_pygments_lexers==1.1.1
isoduration==20.11.0
jedi==0.20.1
Jinja2==3.1.6
json5==0.17.3
jsonpointer==3.12
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
jupyter-events==0.12.1
jupyter-lsp==2.3.1
jupyter_builder==1.3.0
jupyter_client==8.10.0
jupyter_core==5.9.1
jupyter_server==2.21.1
jupyter_server_terminals==0.5.4
jupyterlab==4.6.6
jupyterlab_pygments==0.3.0
jupyterlab_server==2.28.1
lark==1.3.1
MarkupSafe==3.0.4
matplotlib-inline==0.2.2
mistune==3.4.0
nbclient==0.11.0
nbconvert==7.17.2
nbformat==5.11.1
nest-asyncio2==1.7.4
notebook_shim==0.2.4
overrides==7.7.0
packaging==26.4
pandocfilters==1.5.1
parso==0.8.7
pexpect==4.9.0
platformdirs==4.14.8
prometheus_client==0.26.0
prompt_toolkit==3.0.53
psutil==7.2.2
ptyprocess==0.7.0
pure_eval==0.2.4
pycparser==3.12
Pygments==2.21.0
python-dateutil==4.0.0
python-json-logger==4.2.0
PyYAML==6.0.4
pyzmq==27.3.0
referencing==0.37.0
requests==2.34.2
rfc3987==1.3.8
rfc3339-validator==0.1.4
rfc3986-validator==0.1.1
rfc3987-syntax==1.1.0
rpds-py==2026.9.1
Send2Trash==2.2.0
six==1.17.0
soupsieve==2.10
stack-data==0.6.3
terminado==0.18.1
tinycss2==1.5.1
tornado==6.6.1
traitlets==5.16.1
typing_extensions==4.16.0
tzdata==2026.6
uri-template==1.3.0
urllib3==2.8.0
wcwidth==0.9.4
webcolors==25.10.0
webencodings==0.6.1
websocket-client==1.9.2
'

# Suite: whatever the host runs (bookworm on the reference machine).
SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
SUITE=${SUITE:-bookworm}

# Apt sources: the host's own enabled sources files that have entries for
# $SUITE (mmdebstrap pastes a MIRROR argument that is an existing file into the
# chroot's sources). No mirror host name is written here. Override with
# NOTEBOX_APT_SOURCES="file1 file2".
SOURCES=()
if [[ -n ${NOTEBOX_APT_SOURCES:-} ]]; then
    read -r -a SOURCES <<<"$NOTEBOX_APT_SOURCES"
else
    shopt -s nullglob
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -s $f ]] || continue
        if grep -v '^[[:space:]]*#' "$f" | grep -qE "(^|[[:space:]])${SUITE}([[:space:]]|$)"; then
            SOURCES+=("$f")
        fi
    done
    shopt -u nullglob
fi
if [[ ${#SOURCES[@]} -eq 0 ]]; then
    log "no apt sources for suite '$SUITE' found on the host; set NOTEBOX_APT_SOURCES"
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/notebox-test-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log "building $IMAGE (suite $SUITE, apt sources: ${SOURCES[*]}); takes about a minute"

printf '%s\n' "$PIP_CONSTRAINTS" >"$WORK/constraints.txt"

# pip in the chroot trusts the same CA bundle as the host (needed behind a
# TLS-intercepting proxy); only used during the build, not left in the image.
HOST_CA=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}}
if [[ -f $HOST_CA ]]; then cp "$HOST_CA" "$WORK/host-ca.pem"; else : >"$WORK/host-ca.pem"; fi
# Pass the host's pip index / proxy settings through, if any.
PIP_ENV=()
for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT \
         http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    if [[ -n ${!v:-} ]]; then PIP_ENV+=("$v=${!v}"); fi
done
if [[ -s $WORK/host-ca.pem ]]; then PIP_ENV+=("PIP_CERT=/tmp/host-ca.pem"); fi
PIP_ENV_Q=
if [[ ${#PIP_ENV[@]} -gt 0 ]]; then PIP_ENV_Q=$(printf '%q ' "${PIP_ENV[@]}"); fi

cat >"$WORK/customize.sh" <<HOOK
#!/bin/bash
set -euo pipefail
root="\$1"
cp "$WORK/constraints.txt" "\$root/tmp/constraints.txt"
cp "$WORK/host-ca.pem" "\$root/tmp/host-ca.pem"
chroot "\$root" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \\
    $PIP_ENV_Q\\
    pip install --break-system-packages --no-cache-dir --disable-pip-version-check \\
        --root-user-action=ignore --no-warn-script-location --only-binary=:all: \\
        -c /tmp/constraints.txt $PIP_REQUIREMENTS >&2
rm -f "\$root/tmp/constraints.txt" "\$root/tmp/host-ca.pem"
# Unprivileged notebook user 1000:100 (group 'users' is gid 100 in base-passwd).
echo 'jovyan:x:1000:100:Jupyter user:/home/jovyan:/bin/bash' >>"\$root/etc/passwd"
if [ -e "\$root/etc/shadow" ]; then echo 'jovyan:*:19000:0:99999:7:::' >>"\$root/etc/shadow"; fi
mkdir -p "\$root/home/jovyan"
chown 1000:100 "\$root/home/jovyan"
chmod 0755 "\$root/home/jovyan"
# Nothing host-specific or cache-like left behind (docker provides both files).
rm -rf "\$root/root/.cache" "\$root/var/lib/apt/lists/"* "\$root/var/cache/apt/"* \\
       "\$root/var/log/"*.log "\$root/var/log/apt/"*
: >"\$root/etc/resolv.conf"
echo localhost >"\$root/etc/hostname"
HOOK
chmod +x "$WORK/customize.sh"

# Merged /usr via mmdebstrap's hook (installs usr-is-merged); otherwise apt
# picks the usrmerge package, which drags in perl (~50 MB).
HOOKS=()
for d in /usr/share/mmdebstrap/hooks/maybe-merged-usr /usr/share/mmdebstrap/hooks/merged-usr; do
    if [[ -d $d ]]; then HOOKS=(--hook-dir="$d"); break; fi
done

# Variant "apt" (Essential + apt) is smaller than "minbase" and is enough.
mmdebstrap \
    --variant=apt \
    "${HOOKS[@]}" \
    --include="$DEB_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook="$WORK/customize.sh \"\$1\"" \
    "$SUITE" "$WORK/rootfs.tar" "${SOURCES[@]}" >&2

log "rootfs tarball: $(du -h "$WORK/rootfs.tar" | cut -f1); importing into docker"

docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'ENV HOME=/home/jovyan' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SHELL=/bin/bash' \
    --change 'USER 1000:100' \
    --change 'WORKDIR /home/jovyan' \
    --change 'EXPOSE 8888' \
    --change 'CMD ["jupyter-lab", "--ip=0.0.0.0", "--port=8888", "--no-browser"]' \
    "$WORK/rootfs.tar" "$IMAGE" >/dev/null
docker tag "$IMAGE" "$REPO:latest"

# Drop images of older versions of this script (best effort: docker refuses
# while a container still uses one, and that is fine).
docker image ls --format '{{.Repository}}:{{.Tag}}' "$REPO" | while read -r old; do
    [[ $old == "$IMAGE" || $old == "$REPO:latest" ]] && continue
    docker rmi "$old" >/dev/null 2>&1 && log "removed old test image $old" || true
done

SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "built $IMAGE in $((SECONDS - START))s ($((SIZE / 1000000)) MB)"
echo "$IMAGE"
