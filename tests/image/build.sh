#!/usr/bin/env bash
# Build the local Jupyter test image for Notebox without pulling anything from a
# container registry: a minimal Debian rootfs is made with mmdebstrap (using the
# host's own apt sources), JupyterLab is pip-installed into it, and the tarball
# is fed to `docker import`.
#
# Usage: tests/image/build.sh            -> last stdout line is the image ref
#        IMAGE=$(tests/image/build.sh | tail -n1)
#
# The image tag is derived from the sha256 of this file, so editing the script
# triggers a rebuild; an existing image with that tag is reused (fast path).
# Needs: root (or sudo-less docker + mmdebstrap able to run in root/unshare
# mode), docker, mmdebstrap, network access to the Debian mirror and PyPI.
set -euo pipefail

START=$SECONDS
log() { printf '[notebox-test-image] %s\n' "$*" >&2; }

REPO=notebox-test-jupyter
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HASH=$(sha256sum "$SELF" | cut -c1-12)
IMAGE="$REPO:$HASH"

# Versions installed from PyPI on top of Debian's packages. Debian bookworm has
# jupyter-server 1.23 but JupyterLab 4 needs jupyter_server >= 2.4, so
# jupyter-server comes from PyPI too. CONSTRAINTS pins every package pip adds
# (captured with `pip freeze --path /usr/local/lib/python3*/dist-packages`).
JUPYTERLAB_VERSION=4.6.6
JUPYTER_SERVER_VERSION=2.21.1
CONSTRAINTS=''

have_image() { docker image inspect "$IMAGE" >/dev/null 2>&1; }

if have_image; then
    log "test image $IMAGE already built"
    echo "$IMAGE"
    exit 0
fi

# Only one build per machine at a time; a concurrent caller waits and then
# takes the fast path.
LOCK=${TMPDIR:-/tmp}/notebox-test-jupyter.lock
exec 9>"$LOCK"
if ! flock -n 9; then
    log "another build is running; waiting for it"
    flock 9
fi
if have_image; then
    log "test image $IMAGE already built (by a concurrent run)"
    echo "$IMAGE"
    exit 0
fi

for tool in docker mmdebstrap sha256sum; do
    command -v "$tool" >/dev/null || { log "missing required tool: $tool"; exit 1; }
done

# Suite: whatever the host runs (bookworm on the reference machine).
SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
SUITE=${SUITE:-bookworm}

# Apt sources: the host's own enabled sources files that carry entries for
# $SUITE (mmdebstrap pastes an existing file given as MIRROR into the chroot's
# sources). No mirror host name is written here. Override with
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

log "building $IMAGE (suite $SUITE, apt sources: ${SOURCES[*]})"

printf '%s\n' "$CONSTRAINTS" >"$WORK/constraints.txt"

# pip inside the chroot trusts the same CA bundle as pip on the host (needed
# behind TLS-intercepting proxies). It is only used at build time and is not
# left in the image.
HOST_CA=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}}
if [[ -f $HOST_CA ]]; then cp "$HOST_CA" "$WORK/host-ca.pem"; else : >"$WORK/host-ca.pem"; fi
# Pass through pip index/proxy settings of the host, if any.
PIP_ENV=()
for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT \
         http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    if [[ -n ${!v:-} ]]; then PIP_ENV+=("$v=${!v}"); fi
done
if [[ -s $WORK/host-ca.pem ]]; then PIP_ENV+=("PIP_CERT=/tmp/host-ca.pem"); fi
PIP_ENV_Q=
if [[ ${#PIP_ENV[@]} -gt 0 ]]; then PIP_ENV_Q=$(printf '%q ' "${PIP_ENV[@]}"); fi

cat >"$WORK/customize.sh" <<EOF
#!/bin/bash
set -eu
root="\$1"
cp "$WORK/constraints.txt" "\$root/tmp/constraints.txt"
cp "$WORK/host-ca.pem" "\$root/tmp/host-ca.pem"
chroot "\$root" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \\
    $PIP_ENV_Q\\
    pip install --break-system-packages --no-cache-dir --disable-pip-version-check \\
        --root-user-action=ignore --no-warn-script-location -c /tmp/constraints.txt \\
        "jupyterlab==$JUPYTERLAB_VERSION" "jupyter-server==$JUPYTER_SERVER_VERSION"
rm -f "\$root/tmp/constraints.txt" "\$root/tmp/host-ca.pem"
# Unprivileged notebook user 1000:100 (group 'users' is gid 100 in base-passwd).
echo 'jovyan:x:1000:100:Jupyter user:/home/jovyan:/bin/bash' >>"\$root/etc/passwd"
if [ -e "\$root/etc/shadow" ]; then echo 'jovyan:*:19000:0:99999:7:::' >>"\$root/etc/shadow"; fi
mkdir -p "\$root/home/jovyan"
chown 1000:100 "\$root/home/jovyan"
chmod 0755 "\$root/home/jovyan"
# Leave nothing host-specific or cache-like behind.
rm -rf "\$root/root/.cache" "\$root/var/lib/apt/lists/"* "\$root/var/cache/apt/"* \\
       "\$root/var/log/"*.log "\$root/var/log/apt/"*
: >"\$root/etc/resolv.conf"
echo localhost >"\$root/etc/hostname"
EOF
chmod +x "$WORK/customize.sh"

PACKAGES=python3,python3-pip,python3-ipykernel,jupyter-server,python3-terminado,ca-certificates,procps

# Merged /usr via mmdebstrap's hook (installs usr-is-merged), otherwise apt
# picks the usrmerge package which drags in perl (~50 MB).
HOOKS=()
for d in /usr/share/mmdebstrap/hooks/maybe-merged-usr /usr/share/mmdebstrap/hooks/merged-usr; do
    if [[ -d $d ]]; then HOOKS=(--hook-dir="$d"); break; fi
done

mmdebstrap \
    --variant=apt \
    "${HOOKS[@]}" \
    --include="$PACKAGES" \
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
    "$WORK/rootfs.tar" "$IMAGE" >&2
docker tag "$IMAGE" "$REPO:latest"

log "built $IMAGE in $((SECONDS - START))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$IMAGE"
