"""From "Create and start" to the first answered cell, as a member clicks it (issue 28).

Drives headless Chromium through chromedriver's W3C WebDriver API (plain HTTP, no extra
Python packages): logs in on Notebox's form, then RUNS times: fills the new-notebook form
and clicks "Create and start" (t = 0), waits for the notebook page's "Open JupyterLab",
clicks it (JupyterLab opens in a new tab, through the entry handshake, on the notebook's
own origin), waits for the launcher, clicks "Python 3 (ipykernel)", waits for the kernel
to be idle, types 6*7 in the first cell, Shift+Enter, and waits for the output 42. Prints
each step's time since the click; the notebook is deleted after each run.

    python3 benches/first_cell.py NOTEBOX_URL CHROMEDRIVER_URL USER PASSWORD API_TOKEN RUNS
"""
import json
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, "benches")
from raw_docker import notebox_api  # noqa: E402  (benches/ is not a package)

base, driver, user, password, token, runs = sys.argv[1:7]
runs = int(runs)
CSS = "css selector"
STEP_TIMEOUT = 120.0


def call(method, url, body=None):
    """One WebDriver command (chromedriver answers errors as JSON too)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
    return json.loads(raw) if raw else {}


class Browser:
    def __init__(self):
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                            "--window-size=1280,900", "--disable-dev-shm-usage"]},
        }}}
        self.sid = call("POST", f"{driver}/session", caps)["value"]["sessionId"]

    def wd(self, method, path, body=None):
        out = call(method, f"{driver}/session/{self.sid}{path}", body)
        return out.get("value")

    def goto(self, url):
        self.wd("POST", "/url", {"url": url})

    def find(self, css):
        v = self.wd("POST", "/elements", {"using": CSS, "value": css}) or []
        return [next(iter(e.values())) for e in v if isinstance(e, dict)]

    def js(self, script, *args):
        return self.wd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def click(self, el):
        self.wd("POST", f"/element/{el}/click", {})

    def keys(self, el, text):
        self.wd("POST", f"/element/{el}/value", {"text": text})

    def until(self, what, check, timeout=STEP_TIMEOUT):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                v = check()
            except Exception:  # a page mid-load: ask again
                v = None
            if v:
                return v
            time.sleep(0.02)
        text = self.js("return document.body ? document.body.innerText.slice(0, 400) : ''")
        raise SystemExit(f"first-cell: timed out waiting for {what}; the page shows: {text!r}")

    def quit(self):
        call("DELETE", f"{driver}/session/{self.sid}")


api = notebox_api(base)


b = Browser()
try:
    b.goto(f"{base}/login")
    b.keys(b.until("the login form", lambda: b.find("input[name=username]"))[0], user)
    b.keys(b.find("input[name=password]")[0], password)
    b.click(b.find("form button[type=submit], form input[type=submit]")[0])
    b.until("the login", lambda: "/login" not in b.js("return location.pathname"))
    main = b.wd("GET", "/window")
    steps = ["running (Open JupyterLab shown)", "JupyterLab's launcher", "kernel idle", "6*7 answered"]
    totals = {s: [] for s in steps}
    for run in range(1, runs + 1):
        b.wd("POST", "/window", {"handle": main})
        b.goto(f"{base}/notebooks/new")
        name = b.until("the new-notebook form", lambda: b.find("input[name=name]"))[0]
        b.js("arguments[0].value = ''", {"element-6066-11e4-a52e-4f735466cecf": name})
        b.keys(name, f"first cell {run}")
        button = [e for e in b.find("button[type=submit]")
                  if "Create" in (b.wd("GET", f"/element/{e}/text") or "")][0]
        t0 = time.monotonic()
        b.click(button)
        marks = {}
        link = b.until("Open JupyterLab", lambda: [
            e for e in b.find("a.button.primary") if b.wd("GET", f"/element/{e}/text") == "Open JupyterLab"])[0]
        marks[steps[0]] = time.monotonic() - t0
        nb_id = b.js("return location.pathname.split('/')[2]")
        before = set(b.wd("GET", "/window/handles"))
        b.click(link)
        tab = b.until("JupyterLab's tab", lambda: list(set(b.wd("GET", "/window/handles")) - before))[0]
        b.wd("POST", "/window", {"handle": tab})
        card = '//div[contains(@class, "jp-LauncherCard")][.//*[contains(@class, "jp-LauncherCard-label")][normalize-space()="Python 3 (ipykernel)"]]'
        found = b.until("the launcher", lambda: b.wd("POST", "/elements", {"using": "xpath", "value": card}))
        marks[steps[1]] = time.monotonic() - t0
        b.click(next(iter(found[0].values())))
        b.until("the kernel to be idle", lambda: "Python 3 (ipykernel) | Idle" in (b.js(
            "const s = document.querySelector('#jp-main-statusbar'); return s ? s.innerText.replace(/\\s+/g, ' ') : ''") or ""))
        marks[steps[2]] = time.monotonic() - t0
        cell = b.until("the first cell", lambda: b.find(".jp-NotebookPanel .jp-Cell .cm-content"))[0]
        b.click(cell)
        b.keys(cell, "6*7")
        b.keys(cell, "\ue008\ue007")  # Shift+Enter
        b.until("the output 42", lambda: "42" in (b.js(
            "const o = document.querySelector('.jp-NotebookPanel .jp-OutputArea-output'); return o ? o.innerText : ''") or ""))
        marks[steps[3]] = time.monotonic() - t0
        print(f"run {run}: " + "   ".join(f"{s} {marks[s]:.2f} s" for s in steps), flush=True)
        for s in steps:
            totals[s].append(marks[s])
        b.wd("DELETE", "/window")
        api(token, "POST", f"/api/v1/notebooks/{nb_id}/stop", {})
        for _ in range(300):
            if (api(token, "GET", f"/api/v1/notebooks/{nb_id}") or {}).get("state") == "stopped":
                break
            time.sleep(0.1)
        api(token, "DELETE", f"/api/v1/notebooks/{nb_id}")
    print(f"median of {runs}: " + "   ".join(f"{s} {statistics.median(totals[s]):.2f} s" for s in steps))
    answered = statistics.median(totals[steps[3]])
    verdict = "PASS" if answered <= 3.0 else "FAIL"
    print(f"target: the first cell answered at most 3 s after the click (median of {runs}) — {verdict} ({answered:.2f} s)")
    sys.exit(0 if verdict == "PASS" else 1)
finally:
    b.quit()
