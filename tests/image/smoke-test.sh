#!/usr/bin/env bash
# Smoke test for the image made by build.sh: starts one container the way
# Notebox does (token, base_url, root_dir, uid 1000:100, bind-mounted notebook
# dir) and checks the REST API, the Lab page, a kernel (executes code over the
# websocket) and a terminal (runs a command over the websocket).
#
# Usage: tests/image/smoke-test.sh [IMAGE] [jupyter-lab|jupyter-server] [extra docker run args...]
# Env:   KEEP=1 leaves the container running; NBROOT=dir (default /tmp/nbroot).
set -euo pipefail

IMAGE=${1:-notebox-test-jupyter:latest}
APP=${2:-jupyter-lab}
shift 2 2>/dev/null || shift $#
NAME=nbtest-$$
TOKEN=secret123
BASE=/nb/abc/
NBROOT=${NBROOT:-/tmp/nbroot}
# uid the server runs as (last --user in the extra args wins, as in docker).
EXPECT_UID=1000
prev=
for a in "$@"; do
    [[ $prev == --user ]] && EXPECT_UID=${a%%:*}
    [[ $a == --user=* ]] && EXPECT_UID=${a#--user=} && EXPECT_UID=${EXPECT_UID%%:*}
    prev=$a
done

mkdir -p "$NBROOT"
chown 1000:100 "$NBROOT"
cleanup() {
    docker rm -f "$NAME-ws" >/dev/null 2>&1 || true
    [[ -n ${KEEP:-} ]] || docker rm -f "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

t0=$(date +%s.%N)
docker run -d --name "$NAME" -e JUPYTER_TOKEN=$TOKEN --user 1000:100 \
    -v "$NBROOT":/notebooks "$@" "$IMAGE" \
    "$APP" --ip=0.0.0.0 --port=8888 --no-browser \
    --ServerApp.base_url=$BASE --ServerApp.root_dir=/notebooks >/dev/null
IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$NAME")
URL=http://$IP:8888${BASE%/}
AUTH=(-H "Authorization: token $TOKEN")

code=000
for _ in $(seq 1 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$URL/api/status" || true)
    [[ $code == 200 ]] && break
    [[ $(docker inspect -f {{.State.Running}} "$NAME" 2>/dev/null) == true ]] || break
    sleep 0.05
done
t1=$(date +%s.%N)
if [[ $code != 200 ]]; then
    echo "FAIL: /api/status never answered 200 (last: $code)"
    docker logs "$NAME" 2>&1 | tail -30 || true
    exit 1
fi
printf 'ready in %.2fs (docker run -> /api/status 200)\n' "$(echo "$t1 - $t0" | bc)"

fail=0
check() { # name expected actual
    if [[ $2 == "$3" ]]; then echo "ok   $1 ($3)"; else echo "FAIL $1: expected $2, got $3"; fail=1; fi
}

check "GET api/status" 200 "$code"
check "GET api/status without token" 403 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/api/status")"
ver=$(curl -s "${AUTH[@]}" "$URL/api")
echo "     server version: $ver"
if [[ $APP == jupyter-lab ]]; then
    out=$(curl -s -w '\n%{http_code} %{content_type}' "${AUTH[@]}" "$URL/lab")
    check "GET lab" "200 text/html; charset=UTF-8" "$(tail -n1 <<<"$out")"
    grep -q 'jupyter-config-data' <<<"$out" && echo "ok   lab page has jupyter-config-data" || { echo "FAIL lab page content"; fail=1; }
    check "GET lab?token=" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/lab?token=$TOKEN")"
fi

kout=$(curl -s -w '\n%{http_code}' -X POST "${AUTH[@]}" -H 'Content-Type: application/json' \
    -d '{"name":"python3"}' "$URL/api/kernels")
check "POST api/kernels" 201 "$(tail -n1 <<<"$kout")"
KID=$(head -n1 <<<"$kout" | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
tout=$(curl -s -w '\n%{http_code}' -X POST "${AUTH[@]}" "$URL/api/terminals")
check "POST api/terminals" 200 "$(tail -n1 <<<"$tout")"
TNAME=$(head -n1 <<<"$tout" | sed -n 's/.*"name": *"\([^"]*\)".*/\1/p')
if [[ $EXPECT_UID == 1000 ]]; then  # $NBROOT is owned by 1000:100
    check "PUT api/contents/smoke.txt" 201 "$(curl -s -o /dev/null -w '%{http_code}' -X PUT "${AUTH[@]}" \
        -H 'Content-Type: application/json' -d '{"type":"file","format":"text","content":"hi"}' "$URL/api/contents/smoke.txt")"
    if [[ -f $NBROOT/smoke.txt ]]; then echo "ok   file landed in bind mount"; else echo "FAIL file not in $NBROOT"; fail=1; fi
    rm -f "$NBROOT/smoke.txt"
fi

# Websocket round trips, driven from a throw-away container of the same image
# (it ships websocket-client).
docker run -i --rm --name "$NAME-ws" --network container:"$NAME" --user 1000:100 "$IMAGE" \
    python3 - "$KID" "$TNAME" "$TOKEN" "$BASE" "$EXPECT_UID" <<'PY' || fail=1
import json, signal, sys, time, uuid
import websocket
signal.alarm(60)  # never hang the caller
kid, tname, token, base, uid = sys.argv[1:6]
hdr = ["Authorization: token " + token]
ws = websocket.create_connection(f"ws://127.0.0.1:8888{base}api/kernels/{kid}/channels", header=hdr, timeout=30)
mid = uuid.uuid4().hex
ws.send(json.dumps({"header": {"msg_id": mid, "msg_type": "execute_request", "username": "t", "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
                    "parent_header": {}, "metadata": {}, "channel": "shell",
                    "content": {"code": "import os, sys; print(os.getuid(), os.getgid(), sys.version.split()[0])", "silent": False}}))
out, deadline = "", time.time() + 30
while time.time() < deadline:
    m = json.loads(ws.recv())
    if m.get("parent_header", {}).get("msg_id") == mid and m["msg_type"] == "stream":
        out += m["content"]["text"]
    if m.get("parent_header", {}).get("msg_id") == mid and m["msg_type"] == "execute_reply":
        break
ws.close()
kok = out.startswith(uid + " 100")
print(("ok   kernel executed code: " if kok else "FAIL kernel output: ") + out.strip())
ws = websocket.create_connection(f"ws://127.0.0.1:8888{base}terminals/websocket/{tname}", header=hdr, timeout=30)
ws.send(json.dumps(["stdin", "echo term-$((6*7)) $(id -u)\r"]))
buf, deadline = "", time.time() + 20
want = "term-42 " + uid
while time.time() < deadline and want not in buf:
    m = json.loads(ws.recv())
    if m[0] == "stdout":
        buf += m[1]
ws.close()
print("ok   terminal ran a command" if want in buf else "FAIL terminal output: " + repr(buf[-300:]))
sys.exit(0 if kok and want in buf else 1)
PY

if docker logs "$NAME" 2>&1 | grep -E 'Traceback|Permission denied|\[E |not a writable|Read-only file system' >/dev/null; then
    echo "WARN server log has errors:"; docker logs "$NAME" 2>&1 | grep -E -B2 -A5 'Traceback|Permission denied|\[E |not a writable|Read-only file system' | head -40
fi
[[ $fail == 0 ]] && echo "PASS" || { echo "FAILED"; docker logs "$NAME" 2>&1 | tail -30; exit 1; }
