#!/usr/bin/env python3
"""Notebox job runner: runs a notebook (or a command) headless inside a job container.

Notebox embeds this file as /notebox-job/run.py and starts it as the container's PID 1.
It reads /notebox-job/job.json, runs the job from /notebooks and writes output.ipynb
(notebook mode), log.txt and status.json into the job's output_dir; the log also goes to
stdout. Exit codes: 0 success, 1 a cell raised, 2 the runner could not run, 128+n on
signal n (143: SIGTERM), command mode: the command's own exit code.
Only the standard library and jupyter_client are used.
"""

import json
import keyword
import math
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

JOB_DIR = os.environ.get("NOTEBOX_JOB_DIR", "/notebox-job")
WORK_DIR = os.environ.get("NOTEBOX_WORK_DIR", "/notebooks")
MAX_NOTEBOOK_BYTES = 64 << 20  # largest input notebook accepted
STATUS_INTERVAL = 0.25  # seconds between throttled status.json writes
NOTEBOOK_INTERVAL = 2.0  # minimum seconds between output.ipynb writes
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Cancelled(BaseException):
    """Raised in the main thread by the SIGTERM/SIGINT handler."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class JobError(Exception):
    """The runner cannot run the job (exit 2); the message says why."""


class KernelDied(Exception):
    """The kernel process went away while a cell was running."""


def jsonlen(text):
    """Bytes of `text` as an ASCII-escaped JSON string: never under its UTF-8 size."""
    return len(json.dumps(text)) - 2


def measure(output):
    """Bytes an output adds to the notebook written with indent=1; a safe overestimate
    (ASCII escapes, room for the deeper indentation of each line)."""
    text = json.dumps(output, indent=1)
    return len(text) + 8 * text.count("\n") + 16


def fit(text, budget):
    """The longest prefix of `text` whose JSON form fits in `budget` bytes."""
    part = text[: max(budget, 0)]
    while part and jsonlen(part) > budget:
        part = part[: len(part) - (jsonlen(part) - budget)]
    return part


def py_literal(value):
    """A JSON-decoded value as Python source (JSON true/false/null are True/False/None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, list):
        return "[" + ", ".join(map(py_literal, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def tags(cell):
    """A cell's metadata.tags ([] when absent or malformed)."""
    found = (cell.get("metadata") or {}).get("tags")
    return found if isinstance(found, list) else []


class Sink:
    """What the runner writes: the log (stdout + log.txt), status.json, output files.
    An unusable output dir is reported once on stderr; the job runs anyway."""

    def __init__(self, output_dir, max_log_bytes):
        self.dir, self.max_log, self.log_bytes = output_dir, max_log_bytes, 0
        self.log_file, self.warned, self.lock = None, set(), threading.RLock()
        self.status = {"state": "running", "cell": None, "cells": None, "source": None,
                       "failed_cell": None, "error": None, "message": None, "updated_at": time.time()}
        self.dirty, self.last_status = False, 0.0
        try:
            os.makedirs(output_dir, exist_ok=True)
            self.log_file = open(os.path.join(output_dir, "log.txt"), "ab")
        except OSError as e:
            self.warn("dir", f"cannot write to {output_dir}: {e}")
        threading.Thread(target=self._flusher, daemon=True).start()

    def warn(self, key, text):
        """Reports a problem on stderr (so `docker logs` has it), once per key."""
        if key not in self.warned:
            self.warned.add(key)
            print(f"[notebox] warning: {text}", file=sys.stderr, flush=True)

    def log(self, text):
        """Adds text to the log."""
        self.log_raw(text.encode("utf-8", "replace"))

    def log_raw(self, data):
        """Tees bytes to stdout and log.txt up to max_log_bytes, then a note, then nothing."""
        with self.lock:
            room = self.max_log - self.log_bytes
            if room <= 0 or not data:
                return
            if len(data) > room:
                data = data[:room] + f"\n[notebox: log truncated after {self.max_log} bytes]\n".encode()
            self.log_bytes += len(data)
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except (OSError, ValueError):
                pass
            try:
                if self.log_file:
                    self.log_file.write(data)
                    self.log_file.flush()
            except OSError as e:
                self.warn("log", f"cannot write log.txt: {e}")
                self.log_file = None

    def write_file(self, name, data):
        """Writes output_dir/name atomically (temporary file, then rename)."""
        path, tmp = os.path.join(self.dir, name), os.path.join(self.dir, f".{name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            self.warn(name, f"cannot write {path}: {e}")

    def set_status(self, force=False, **fields):
        """Updates status.json: now when forced or the last write is old enough, else the
        background flusher writes it within STATUS_INTERVAL (cheap for many quick cells)."""
        with self.lock:
            self.status.update(fields)
            self.dirty = True
            if force or time.monotonic() - self.last_status >= STATUS_INTERVAL:
                self.status["updated_at"], self.dirty, self.last_status = time.time(), False, time.monotonic()
                self.write_file("status.json", json.dumps(self.status).encode() + b"\n")

    def _flusher(self):
        while True:
            time.sleep(STATUS_INTERVAL)
            if self.dirty:
                self.set_status(force=True)


class Job:
    """What both modes share: the job, its sink, the final exit code once known."""

    def __init__(self, job, sink):
        self.job, self.sink, self.final_code = job, sink, None

    def finish(self, state, code, message, **fields):
        """Writes the log's last line and the final status; returns the exit code."""
        self.sink.log(f"[notebox] {message}\n")
        self.sink.set_status(force=True, state=state, message=message, **fields)
        self.final_code = code
        return code


class NotebookJob(Job):
    """Runs every code cell of the job's notebook in a Jupyter kernel, in order."""

    def __init__(self, job, sink):
        super().__init__(job, sink)
        self.nb = self.km = self.kc = None
        self.started = False  # cells began to run: output.ipynb is worth writing
        self.total = self.budget = 0  # estimated output notebook size; what outputs may fill
        self.total_noted = self.nb_dirty = False
        self.last_nb_write, self.nb_interval = 0.0, NOTEBOOK_INTERVAL
        self.displays = {}  # display_id -> outputs that update_display_data changes
        self._reset_cell({})

    def _reset_cell(self, cell):
        self.cell, self.outs = cell, []
        cell["outputs"] = self.outs
        self.sizes, self.pending = [], []  # estimated size of each output; stream text to append
        self.cell_bytes, self.cell_full, self.clear_pending = 0, False, False

    def load(self):
        """Reads input.ipynb, checks it and injects the parameters."""
        path = os.path.join(JOB_DIR, "input.ipynb")
        try:
            if os.path.getsize(path) > MAX_NOTEBOOK_BYTES:
                raise JobError(f"the notebook is over {MAX_NOTEBOOK_BYTES >> 20} MiB")
            with open(path, "rb") as f:
                nb = json.loads(f.read())
        except OSError as e:
            raise JobError(f"cannot read the notebook: {e}") from None
        except (ValueError, RecursionError) as e:
            raise JobError(f"the notebook is not valid JSON: {e}") from None
        cells = nb.get("cells") if isinstance(nb, dict) else None
        if (not isinstance(cells, list) or nb.get("nbformat") != 4
                or not all(isinstance(c, dict) and isinstance(c.get("cell_type"), str)
                           and isinstance(c.get("source", ""), (str, list)) for c in cells)):
            raise JobError("the notebook is not an nbformat 4 notebook")
        params = self.job["parameters"]
        if params:  # papermill: after the first "parameters" cell, else first; old ones replaced
            cells = [c for c in cells if "injected-parameters" not in tags(c)]
            lines = ["# Parameters"] + [f"{k} = {py_literal(v)}" for k, v in params.items()]
            new = {"cell_type": "code", "execution_count": None, "outputs": [],
                   "metadata": {"tags": ["injected-parameters"]}, "source": "\n".join(lines) + "\n"}
            if nb.get("nbformat_minor", 0) >= 5:
                new["id"] = uuid.uuid4().hex[:12]
            cells.insert(next((i + 1 for i, c in enumerate(cells)
                               if c["cell_type"] == "code" and "parameters" in tags(c)), 0), new)
            nb["cells"] = cells
        self.nb = nb

    def start_kernel(self, cwd):
        """Starts the notebook's kernel (python3 when its kernelspec is not installed)."""
        try:
            from jupyter_client import KernelManager
            from jupyter_client.kernelspec import KernelSpecManager
        except ImportError:
            raise JobError("jupyter_client is not installed in this image") from None
        spec = (self.nb.get("metadata") or {}).get("kernelspec")
        name = spec.get("name") if isinstance(spec, dict) and spec.get("name") else "python3"
        specs = KernelSpecManager().find_kernel_specs()
        if name not in specs:
            if "python3" not in specs:
                raise JobError(f"no kernel: {name!r} is not installed (nor python3)")
            self.sink.log(f"[notebox] kernel {name!r} is not installed; using python3\n")
            name = "python3"
        # The connection file must go somewhere writable whatever $HOME is.
        os.environ.setdefault("JUPYTER_RUNTIME_DIR", tempfile.mkdtemp(prefix="notebox-jupyter-"))
        # An IPython kernel keeps no input history for a job (nobody reads it back): saving
        # it to SQLite was most of each cell's cost (benches/run-jobs.sh).
        language = (KernelSpecManager().get_kernel_spec(name).language or "").lower()
        extra = ["--HistoryManager.hist_file=:memory:"] if language == "python" else []
        try:
            self.km = KernelManager(kernel_name=name)
            self.km.start_kernel(cwd=cwd, extra_arguments=extra)
            self.kc = self.km.client()
            self.kc.start_channels()
            self.kc.wait_for_ready(timeout=120)
        except Exception as e:
            raise JobError(f"could not start the {name} kernel: {e}") from None

    def kill_kernel(self):
        """Kills the kernel's process group at once (no async machinery: safe in a signal)."""
        proc = getattr(getattr(self.km, "provisioner", None), "process", None)
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # jupyter_client starts it in its own session
            except OSError:
                proc.kill()
            proc.wait()

    def run(self):
        """Runs the notebook; returns the exit code."""
        self.load()
        codes = [c for c in self.nb["cells"] if c["cell_type"] == "code"]
        for cell in codes:
            cell["outputs"], cell["execution_count"] = [], None
        n = len(codes)
        self.total = len(json.dumps(self.nb, indent=1))
        self.budget = self.job["max_output_bytes"] - 16 * n - 4096  # room for counts, notes
        if self.total > self.job["max_output_bytes"]:
            raise JobError(f"the notebook ({self.total} bytes) is over max_output_bytes")
        # Like Jupyter, relative paths in cells start from the notebook's own folder.
        nb_dir = os.path.dirname(os.path.join(WORK_DIR, self.job.get("path") or ""))
        cwd = next((d for d in (nb_dir, WORK_DIR) if os.path.isdir(d)), None)
        self.sink.set_status(force=True, cell=0, cells=n, message="starting the kernel")
        began = time.monotonic()
        if n:
            self.start_kernel(cwd)
        self.started = True
        for i, cell in enumerate(codes, 1):
            src = "".join(cell.get("source", ""))
            self.sink.set_status(force=i in (1, n), cell=i, source=src[:200], message=None)
            self.sink.log(f"[notebox] cell {i} of {n}\n")
            try:
                err = self.execute(cell, src)
            except KernelDied:
                self.kill_kernel()
                return self.finish("failed", 1, f"the kernel died during cell {i} of {n}", failed_cell=i,
                                   error={"ename": "DeadKernelError", "evalue": "the kernel died"})
            if err:
                self.finish("failed", 1, f"cell {i} of {n} raised {err[0]}: {err[1][:200]}",
                            failed_cell=i, error={"ename": err[0], "evalue": err[1]})
                break
            self.tick()
        else:
            self.finish("succeeded", 0, f"ran {n} cells in {time.monotonic() - began:.1f} s")
        if n:  # everything is written: a graceful shutdown, killed if need be
            try:
                self.kc.stop_channels()
                self.km.shutdown_kernel(now=False)
            except Exception:
                self.kill_kernel()
        return self.final_code

    def execute(self, cell, src):
        """Runs one cell, collecting its outputs; returns (ename, evalue) if it raised."""
        self._reset_cell(cell)
        if not src.strip():
            return None
        msg_id = self.kc.execute(src, store_history=True, allow_stdin=False, stop_on_error=True)
        reply = replied_at = None
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                reply = reply or self._reply(msg_id, 0)
                if reply:  # replied, but no "idle" for seconds: that message was lost
                    replied_at = replied_at or time.monotonic()
                    if time.monotonic() - replied_at > 4:
                        break
                if not self.km.is_alive():
                    raise KernelDied()
                self.tick()
                continue
            if msg["parent_header"].get("msg_id") == msg_id and self.handle(msg):
                break
            self.tick()
        while reply is None:
            reply = self._reply(msg_id, 1)
            if reply is None and not self.km.is_alive():
                raise KernelDied()
        self._flush_text()
        content = reply["content"]
        if content.get("execution_count") is not None:
            cell["execution_count"] = content["execution_count"]
        if content.get("status") == "error":
            return str(content.get("ename", "Error")), str(content.get("evalue", ""))
        if content.get("status") == "aborted":
            return "Aborted", "the kernel aborted the cell"
        return None

    def _reply(self, msg_id, timeout):
        """The shell reply to msg_id, or None if none came within `timeout` seconds."""
        while True:
            try:
                msg = self.kc.get_shell_msg(timeout=timeout)
            except queue.Empty:
                return None
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def handle(self, msg):
        """Handles one iopub message of the running cell; True once the kernel is idle."""
        kind, c = msg["msg_type"], msg["content"]
        if kind == "status":
            return c.get("execution_state") == "idle"
        if kind == "execute_input":
            self.cell["execution_count"] = c.get("execution_count")
        elif kind == "stream":
            self.sink.log(c.get("text", ""))
            self.add({"output_type": "stream", "name": c.get("name", "stdout"), "text": c.get("text", "")})
        elif kind in ("display_data", "execute_result"):
            out = {"output_type": kind, "data": c.get("data", {}), "metadata": c.get("metadata", {})}
            if kind == "execute_result":
                out["execution_count"] = c.get("execution_count")
                self.sink.log(str(out["data"].get("text/plain", "")) + "\n")
            display_id = (c.get("transient") or {}).get("display_id")
            if self.add(out) and display_id:
                self.displays.setdefault(display_id, []).append(out)
        elif kind == "update_display_data":
            for out in self.displays.get((c.get("transient") or {}).get("display_id"), []):
                new = dict(out, data=c.get("data", {}), metadata=c.get("metadata", {}))
                grow = measure(new) - measure(out)
                if self.total + grow <= self.budget:
                    out.update(data=new["data"], metadata=new["metadata"])
                    self.total, self.nb_dirty = self.total + grow, True
        elif kind == "error":
            tb = c.get("traceback") or []
            self.sink.log(ANSI_RE.sub("", "\n".join(tb)) + "\n")
            self.add({"output_type": "error", "ename": c.get("ename", ""), "evalue": c.get("evalue", ""),
                      "traceback": tb})
        elif kind == "clear_output":
            if c.get("wait"):
                self.clear_pending = True  # clear when the next output arrives
            else:
                self._clear()
        return False

    def _clear(self):
        self.total -= sum(self.sizes)
        self.outs.clear()
        self._reset_cell(self.cell)
        self.nb_dirty = True

    def _flush_text(self):
        """Joins stream text gathered for the last output (no quadratic string growth)."""
        if self.pending:
            self.outs[-1]["text"] += "".join(self.pending)
            self.pending = []

    def _store(self, out, size, merge=False):
        if merge:
            self.pending.append(out["text"])
            self.sizes[-1] += size
        else:
            self._flush_text()
            self.outs.append(out)
            self.sizes.append(size)
        self.cell_bytes += size
        self.total += size
        self.nb_dirty = True

    def add(self, out):
        """Adds an output to the running cell within the cell and notebook limits (consecutive
        streams of one name merge); True if it was stored whole."""
        if self.clear_pending:
            self._clear()
        kind, cap_cell = out["output_type"], self.job["max_cell_output_bytes"]
        if kind == "error":  # the traceback is kept whatever the cell printed before
            size = measure(out)
            if self.total + size <= self.budget + 2048:
                self._store(out, size)
            return True
        if self.cell_full:
            return False
        last = self.outs[-1] if self.outs else {}
        merge = kind == "stream" and last.get("output_type") == "stream" and last.get("name") == out["name"]
        size = jsonlen(out["text"]) if merge else measure(out)
        cell_room, total_room = cap_cell - self.cell_bytes, self.budget - self.total
        if size <= min(cell_room, total_room):
            self._store(out, size, merge)
            return True
        if kind == "stream":  # keep the part that fits
            overhead = 0 if merge else size - jsonlen(out["text"])
            part = fit(out["text"], min(cell_room, total_room) - overhead)
            if part:
                self._store(dict(out, text=part), overhead + jsonlen(part), merge)
        self.cell_full = True
        by_cell = cell_room <= total_room
        if by_cell or not self.total_noted:  # the notebook limit is noted once
            self.total_noted = self.total_noted or not by_cell
            limit = cap_cell if by_cell else self.job["max_output_bytes"]
            text = f"\n[notebox: output truncated after {limit} bytes]\n"
            self.sink.log(text)
            marker = {"output_type": "stream", "name": "stderr", "text": text}
            self._store(marker, measure(marker))
        return False

    def tick(self):
        """Writes output.ipynb if it changed and the last write is old enough."""
        if self.nb_dirty and time.monotonic() - self.last_nb_write >= self.nb_interval:
            self.write_notebook()

    def write_notebook(self):
        """Writes output.ipynb atomically, never over max_output_bytes."""
        self._flush_text()
        began = time.monotonic()
        data = json.dumps(self.nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        data = data.encode("utf-8", "replace")
        if len(data) > self.job["max_output_bytes"]:
            self.sink.warn("size", f"output.ipynb would be {len(data)} bytes, over the limit: not written")
        else:
            self.sink.write_file("output.ipynb", data)
        self.nb_dirty, self.last_nb_write = False, time.monotonic()
        # A big notebook is written less often, so writing stays a small share of the time.
        self.nb_interval = max(NOTEBOOK_INTERVAL, 5 * (self.last_nb_write - began))

    def finish(self, state, code, message, **fields):
        """Writes the output notebook, then the final log line and status."""
        if self.started:
            self.write_notebook()
        return super().finish(state, code, message, **fields)

    def cancel(self, signum):
        """SIGTERM/SIGINT: kill the kernel, keep the outputs so far, exit 128+signum."""
        self.kill_kernel()
        status = self.sink.status
        where = f" during cell {status['cell']} of {status['cells']}" if self.started else ""
        return self.finish("cancelled", 128 + signum, f"cancelled ({signal.Signals(signum).name}){where}")


class CommandJob(Job):
    """Runs the job's command from /notebooks, teeing its output to the log."""

    child = None

    def run(self):
        """Runs the command; returns its exit code (128+n when killed by signal n)."""
        argv = self.job.get("command")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise JobError("job.json: command must be a non-empty list of strings")
        for k, v in self.job["parameters"].items():  # "{name}" placeholders
            argv = [a.replace("{" + k + "}", v if isinstance(v, str) else json.dumps(v)) for a in argv]
        self.sink.set_status(force=True, message=f"running {argv[0]}")
        self.sink.log(f"[notebox] running {subprocess.list2cmdline(argv)}\n")
        env = dict(os.environ, PYTHONUNBUFFERED=os.environ.get("PYTHONUNBUFFERED", "1"))  # live logs
        try:
            self.child = subprocess.Popen(argv, cwd=WORK_DIR if os.path.isdir(WORK_DIR) else None, env=env,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError:
            return self.finish("failed", 127, f"command not found: {argv[0]}")
        except OSError as e:
            return self.finish("failed", 126, f"cannot run {argv[0]}: {e.strerror or e}")
        while True:
            chunk = os.read(self.child.stdout.fileno(), 65536)
            if not chunk:
                break
            self.sink.log_raw(chunk)
        code = self.child.wait()
        code = 128 - code if code < 0 else code
        return self.finish("succeeded" if code == 0 else "failed", code, f"exit code {code}")

    def cancel(self, signum):
        """SIGTERM/SIGINT: stop the command's process group (SIGKILL after 0.5 s)."""
        if self.child is not None and self.child.poll() is None:
            try:
                os.killpg(self.child.pid, signal.SIGTERM)
                self.child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                os.killpg(self.child.pid, signal.SIGKILL)
            except OSError:
                pass
        return self.finish("cancelled", 128 + signum, f"cancelled ({signal.Signals(signum).name})")


def load_job():
    """Reads job.json and fills in defaults; JobError when it is unreadable."""
    try:
        with open(os.path.join(JOB_DIR, "job.json"), "rb") as f:
            job = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise JobError(f"cannot read job.json: {e}") from None
    if not isinstance(job, dict):
        raise JobError("job.json is not an object")
    if not isinstance(job.get("output_dir"), str):
        job["output_dir"] = os.path.join(WORK_DIR, "jobs", str(job.get("id") or "unknown"))
    for key, default in (("max_output_bytes", 64 << 20), ("max_log_bytes", 64 << 20),
                         ("max_cell_output_bytes", 1 << 20)):
        if not isinstance(job.get(key), int) or job[key] <= 0:
            job[key] = default
    job["parameters"] = job.get("parameters") or {}
    return job


def check_job(job):
    """The checks whose failure goes into status.json (exit 2)."""
    if job.get("mode") not in ("notebook", "command"):
        raise JobError(f"job.json: unknown mode {job.get('mode')!r}")
    if not isinstance(job["parameters"], dict):
        raise JobError("job.json: parameters must be an object")
    for name in job["parameters"]:
        if not NAME_RE.match(name):
            raise JobError(f"invalid parameter name {name!r}: must match [A-Za-z_][A-Za-z0-9_]*")
        if job["mode"] == "notebook" and keyword.iskeyword(name):
            raise JobError(f"invalid parameter name {name!r}: a Python keyword")


def main():
    """Runs the job; returns the process exit code."""
    runner = sink = None

    def on_signal(signum, frame):
        if runner is not None and runner.final_code is not None:
            os._exit(runner.final_code)  # everything is written already
        if not on_signal.fired:
            on_signal.fired = True
            raise Cancelled(signum)

    on_signal.fired = False
    signal.signal(signal.SIGTERM, on_signal)  # PID 1 has no default handlers: install ours
    signal.signal(signal.SIGINT, on_signal)
    try:
        try:
            job = load_job()
        except JobError as e:
            print(f"[notebox] {e}", file=sys.stderr, flush=True)
            return 2
        sink = Sink(job["output_dir"], job["max_log_bytes"])
        try:
            check_job(job)
            runner = (NotebookJob if job["mode"] == "notebook" else CommandJob)(job, sink)
            return runner.run()
        except JobError as e:
            message = str(e)
        except Exception as e:  # a bug here must still end in a final status
            traceback.print_exc()
            message = f"runner error: {type(e).__name__}: {e}"
        if isinstance(runner, NotebookJob):
            runner.kill_kernel()
        if runner is not None:
            return runner.finish("failed", 2, message)
        sink.log(f"[notebox] {message}\n")
        sink.set_status(force=True, state="failed", message=message)
        return 2
    except Cancelled as c:
        if runner is not None:
            return runner.cancel(c.signum)
        if sink is not None:
            sink.set_status(force=True, state="cancelled", message="cancelled")
        return 128 + c.signum


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # don't wait for jupyter_client's threads
