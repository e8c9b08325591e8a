"""The raw Docker side of the start benchmarks (benches/run-start.sh, run-burst.sh): the
engine's API over its socket, Notebox's API, and the container Notebox made for a warm-up
notebook copied as a raw `docker run` would make it."""
import http.client, json, os, socket, time
from urllib.parse import quote, urlsplit


class UnixHTTP(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect("/var/run/docker.sock")


def docker(method, path, body=None):
    c = UnixHTTP("localhost", timeout=120)
    c.request(method, path, json.dumps(body) if body is not None else None,
              {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status >= 300:
        raise SystemExit(f"docker {method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data) if data else None


def notebox_api(base):
    """api(token, method, path, body=None) for the Notebox at `base`: a connection per call
    (as the raw side's probes; no idle keep-alive to lose); a 404 is None."""
    nb = urlsplit(base)

    def api(token, method, path, body=None):
        c = http.client.HTTPConnection(nb.hostname, nb.port, timeout=60)
        c.request(method, path, json.dumps(body) if body is not None else None,
                  {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        if r.status >= 300 and r.status != 404:
            raise SystemExit(f"notebox {method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data) if data and r.status != 404 else None
    return api


def containers_of(nid):
    f = json.dumps({"label": [f"io.notebox.notebook={nid}"]})
    return docker("GET", f"/containers/json?all=1&filters={quote(f)}")


class RawSpec:
    """The warm-up notebook's container as a raw create body, labelled `label`; the
    notebook is stopped (not deleted: its folders stay for the raw containers' mounts)."""

    def __init__(self, api, token, warm, label):
        (cid,) = [c["Id"] for c in containers_of(warm)]
        info = docker("GET", f"/containers/{cid}/json")
        cfg, hc = info["Config"], info["HostConfig"]
        self.network = hc["NetworkMode"]
        spec = {k: cfg[k] for k in ("Image", "Cmd", "Entrypoint", "Env", "User", "WorkingDir", "ExposedPorts")
                if cfg.get(k) is not None}
        spec["Labels"] = {"io.notebox.bench": label}
        spec["HostConfig"] = {k: v for k, v in hc.items() if k in (
            "Binds", "Mounts", "NanoCpus", "Memory", "MemorySwap", "PidsLimit", "CapDrop", "CapAdd",
            "SecurityOpt", "Init", "ShmSize", "NetworkMode", "Tmpfs", "IpcMode", "ReadonlyRootfs") and v is not None}
        spec["NetworkingConfig"] = {"EndpointsConfig": {self.network: {}}}
        self.spec = spec
        self.jupyter_token = next(e.split("=", 1)[1] for e in cfg["Env"] if e.startswith("JUPYTER_TOKEN="))
        # Jupyter's base URL as Notebox gave it (it carries the notebook's path key): from
        # the command line, else the old /nb/{id}/.
        base_url = next((a.split("=", 1)[1] for a in (cfg.get("Cmd") or [])
                         if a.split("=", 1)[0].endswith(".base_url")), f"/nb/{warm}/")
        self.status_path = base_url.rstrip("/") + "/api/status"
        self.dirs = []
        api(token, "POST", f"/api/v1/notebooks/{warm}/stop")
        deadline = time.time() + 60
        while api(token, "GET", f"/api/v1/notebooks/{warm}")["state"] != "stopped":
            if time.time() > deadline:
                raise SystemExit("the warm-up notebook did not stop")
            time.sleep(0.2)
        time.sleep(2)  # its container's exit settles

    def body(self, tag):
        """A create body whose /notebooks is a new, empty folder made like Notebox makes
        it (same owner and mode as the warm-up's): reusing the warm-up's folder would hand
        the raw side what Jupyter left there. `remove_dirs` removes them."""
        binds = []
        for b in self.spec["HostConfig"].get("Binds", []):
            host, rest = b.split(":", 1)
            if rest.startswith("/notebooks:"):
                st = os.stat(host)
                fresh = f"{host}-raw-{tag}"
                os.mkdir(fresh, st.st_mode & 0o7777)
                os.chown(fresh, st.st_uid, st.st_gid)
                os.chmod(fresh, st.st_mode & 0o7777)
                self.dirs.append(fresh)
                host = fresh
            binds.append(f"{host}:{rest}")
        return dict(self.spec, HostConfig=dict(self.spec["HostConfig"], Binds=binds))

    def answers(self, ip):
        """Whether Jupyter at `ip` answers its status with 200."""
        try:
            c = http.client.HTTPConnection(ip, 8888, timeout=3)
            c.request("GET", self.status_path, headers={"Authorization": f"token {self.jupyter_token}"})
            ok = c.getresponse().status == 200
            c.close()
            return ok
        except OSError:
            return False

    def ip_of(self, rid):
        return docker("GET", f"/containers/{rid}/json")["NetworkSettings"]["Networks"][self.network]["IPAddress"]

    def remove_dirs(self):
        import shutil
        while self.dirs:
            shutil.rmtree(self.dirs.pop(), ignore_errors=True)
