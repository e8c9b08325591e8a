// Notebox: a little progressive enhancement. Every page works without it.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  let text = source.value !== undefined ? source.value : source.textContent.trim();
  if (button.dataset.absolute) text = new URL(text, window.location.href).href;
  navigator.clipboard.writeText(text).then(
    () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); },
    () => { window.getSelection().selectAllChildren(source); }
  );
});

// Forms that destroy something ask first.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// Mark the current tab.
for (const a of document.querySelectorAll(".tabs a")) {
  if (a.getAttribute("href") === window.location.pathname) a.setAttribute("aria-current", "page");
}

// Reloads the page for a new state; a one-time notice ("?done=kept") is not shown again.
function refresh() {
  const url = new URL(window.location.href);
  if (url.searchParams.has("done")) {
    url.searchParams.delete("done");
    window.location.replace(url.href);
  } else {
    window.location.reload();
  }
}

// Live state: poll the JSON API while a page shows notebooks. A changed state reloads the
// page (its buttons depend on it); a changed detail (pull progress) is updated in place.
// Returns whether a notebook on the page is starting, pulling or stopping.
async function pollNotebooks() {
  const list = document.querySelector("[data-poll]");
  if (!list) return false;
  let moving = false;
  try {
    const res = await fetch(list.dataset.poll, { headers: { Accept: "application/json" } });
    if (res.status === 401) { refresh(); return; }
    if (!res.ok) return;
    const data = await res.json();
    const notebooks = data.notebooks || [data];
    const byId = new Map(notebooks.map((n) => [n.id, n]));
    const rows = document.querySelectorAll("[data-notebook]");
    // A dashboard that lists only some (a member with hundreds) reloads for new ones only
    // when its own rows change.
    const complete = list.dataset.complete !== "false";
    if (data.notebooks && complete && rows.length !== notebooks.length) { refresh(); return; }
    for (const el of rows) {
      const nb = byId.get(el.dataset.notebook);
      if (!nb) { refresh(); return; }
      if (nb.state !== el.dataset.state) { refresh(); return false; }
      if (nb.transient && nb.state !== "queued") moving = true;
      const detail = el.querySelector("[data-field=detail]") || document.querySelector("[data-field=detail]");
      if (detail && nb.transient) {
        detail.textContent = nb.state_detail;
      }
      // Idle reclaim: a warning that appears or goes away changes the page's buttons.
      const holder = el.dataset.warning !== undefined ? el : document.getElementById("activity");
      const warning = Boolean(nb.activity && nb.activity.warning);
      if (holder && holder.dataset.warning !== undefined && holder.dataset.warning !== String(warning)) {
        refresh(); return;
      }
      const summary = el.querySelector("[data-field=activity-summary]") || (holder && holder.querySelector("[data-field=activity-summary]"));
      if (summary && nb.activity) summary.textContent = nb.activity.summary;
    }
  } catch (e) { /* offline for a moment: try again on the next tick */ }
  return moving;
}
// Every 2 s; every 250 ms while a notebook is starting or stopping (for the first two
// minutes on the page), so that "Open JupyterLab" appears within moments of Jupyter
// answering — not up to 2 s later. A queued notebook may wait for hours: 2 s.
if (document.querySelector("[data-poll]")) {
  const shownAt = Date.now();
  const next = async () => {
    const moving = await pollNotebooks();
    const fast = moving && Date.now() - shownAt < 120000;
    setTimeout(next, fast ? 250 : 2000);
  };
  const first = document.querySelector("[data-notebook][data-state=starting], [data-notebook][data-state=pulling], [data-notebook][data-state=stopping]");
  setTimeout(next, first ? 250 : 2000);
}

// Follow the container log.
async function followLogs() {
  const pre = document.getElementById("logs");
  if (!pre) return;
  if (pre.dataset.follow !== "true") return;
  try {
    const res = await fetch(pre.dataset.logs, { headers: { Accept: "application/json" } });
    if (!res.ok) return;
    const data = await res.json();
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
    pre.textContent = data.logs || (data.running ? "(no output yet)" : "Waiting for the container to start…");
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  } catch (e) { /* try again */ }
}
if (document.getElementById("logs")) {
  followLogs();
  setInterval(followLogs, 2000);
}

// Auto-shutdown countdown, ticking every second.
for (const el of document.querySelectorAll("[data-countdown]")) {
  let left = parseInt(el.dataset.countdown, 10);
  const show = () => {
    const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    el.textContent = left <= 0 ? "stopping now" : `stops in ${h}h ${String(m).padStart(2, "0")}m ${String(s).padStart(2, "0")}s`;
  };
  show();
  setInterval(() => { if (left > 0) { left -= 1; show(); } }, 1000);
}

// Idle warning countdown: "4 min 12 s".
for (const el of document.querySelectorAll("[data-countdown-short]")) {
  let left = parseInt(el.dataset.countdownShort, 10);
  const show = () => {
    const m = Math.floor(left / 60), s = left % 60;
    el.textContent = left <= 0 ? "a moment" : (m > 0 ? `${m} min ${s} s` : `${s} s`);
  };
  show();
  setInterval(() => { if (left > 0) { left -= 1; show(); } }, 1000);
}

// GPU map: refresh numbers, bars and sparklines from the JSON API.
async function refreshGpus() {
  const grid = document.getElementById("gpu-grid");
  if (!grid) return;
  try {
    const res = await fetch(grid.dataset.gpus, { headers: { Accept: "application/json" } });
    if (!res.ok) return;
    const data = await res.json();
    for (const g of data.gpus) {
      const card = grid.querySelector(`[data-uuid="${CSS.escape(g.uuid)}"]`);
      if (!card) { refresh(); return; }
      const heldNow = g.holder !== null;
      if (heldNow !== card.classList.contains("held")) { refresh(); return; }
      const idleNow = heldNow && g.holder.busy === false;
      if (idleNow !== card.classList.contains("idle")) { refresh(); return; }
      if (idleNow) {
        const mins = Math.floor(g.holder.idle_seconds / 60);
        const hold = card.querySelector("[data-field=hold]");
        if (hold) hold.textContent = `held · idle ${g.holder.idle_seconds < 120 ? g.holder.idle_seconds + " s" : mins + " min"}`;
      }
      const set = (field, text) => { const el = card.querySelector(`[data-field=${field}]`); if (el) el.textContent = text; };
      set("util", g.utilization_percent === null ? "–" : `${g.utilization_percent} %`);
      set("mem", `${g.memory_used_mib} / ${g.memory_total_mib} MiB`);
      set("temp", g.temperature_c === null ? "–" : `${g.temperature_c} °C`);
      const bar = card.querySelector("[data-field=membar]");
      if (bar && g.memory_total_mib > 0) bar.setAttribute("width", String(Math.round(100 * g.memory_used_mib / g.memory_total_mib)));
      const spark = card.querySelector("[data-field=spark]");
      if (spark && g.history.length) {
        const n = Math.max(g.history.length - 1, 1);
        spark.setAttribute("points", g.history.map((u, i) => `${(i * 120 / n).toFixed(1)},${(32 - Math.min(u, 100) * 0.32).toFixed(1)}`).join(" "));
      }
    }
  } catch (e) { /* try again */ }
}
if (document.getElementById("gpu-grid")) setInterval(refreshGpus, 2000);

// An environment's build: its log streamed as it is written, its state polled.
const buildCard = document.querySelector("[data-build-log]");
if (buildCard) {
  const log = document.getElementById("build-log");
  const stateEl = document.getElementById("build-state");
  const detail = document.getElementById("build-detail");
  const step = document.getElementById("build-step");
  let offset = 0;
  let open = true;
  const follow = async () => {
    while (open) {
      try {
        const res = await fetch(`${buildCard.dataset.buildLog}?offset=${offset}`, { credentials: "same-origin" });
        if (!res.ok || !res.body) break;
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          offset += value.length;
          const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
          log.textContent += decoder.decode(value, { stream: true });
          if (atEnd) log.scrollTop = log.scrollHeight;
        }
      } catch (e) { /* the connection dropped: ask again */ }
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  const poll = async () => {
    try {
      const res = await fetch(buildCard.dataset.buildState, { credentials: "same-origin" });
      if (res.ok) {
        const b = await res.json();
        stateEl.textContent = b.state;
        stateEl.className = `state ${b.state === "ready" ? "ok" : b.state === "failed" ? "error" : (b.state === "queued" || b.state === "building") ? "busy" : "muted"}`;
        detail.textContent = b.state_detail;
        step.textContent = b.failed_step ? `Failed at: ${b.failed_step}` : b.step;
        if (b.state !== "queued" && b.state !== "building") {
          open = false;
          // A launch link's click waits for this build: it goes on by itself.
          const launch = document.querySelector("form[data-auto-submit]");
          if (launch && b.state === "ready") {
            launch.querySelector("button").disabled = false;
            launch.submit();
          }
          const cancel = document.getElementById("cancel-build");
          if (cancel) cancel.closest("form").remove();
          return;
        }
      }
    } catch (e) { /* try again */ }
    setTimeout(poll, 1000);
  };
  follow().then(() => {
    // The log of an ended build is read once.
  });
  poll();
}

// A job's page: its state and progress polled, its log followed, the page reloaded once
// it ends (the output notebook is rendered by the server).
const jobCard = document.querySelector("[data-job-log]");
if (jobCard) {
  const log = document.getElementById("job-log");
  let offset = 0;
  let following = true;
  const followLog = async () => {
    while (following) {
      try {
        const res = await fetch(`${jobCard.dataset.jobLog}?offset=${offset}`, { credentials: "same-origin" });
        if (res.ok) {
          const piece = await res.json();
          if (piece.text) {
            const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
            log.textContent += piece.text;
            if (atEnd) log.scrollTop = log.scrollHeight;
          }
          offset = piece.offset;
          if (piece.finished) break;
          if (piece.text) continue; // more may be waiting
        }
      } catch (e) { /* try again */ }
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  followLog();
  if (jobCard.dataset.finished !== "true") {
    const stateEl = document.getElementById("job-state");
    const detail = document.getElementById("job-detail");
    const poll = async () => {
      try {
        const res = await fetch(jobCard.dataset.job, { credentials: "same-origin" });
        if (res.ok) {
          const j = await res.json();
          stateEl.textContent = { timed_out: "Timed out" }[j.state] || (j.state[0].toUpperCase() + j.state.slice(1));
          stateEl.className = `badge ${{ succeeded: "running", running: "running", failed: "failed", timed_out: "failed", cancelled: "stopped" }[j.state] || "queued"}`;
          detail.textContent = j.state_detail;
          const cell = document.getElementById("job-cell");
          if (j.progress && cell) {
            cell.textContent = `Cell ${j.progress.cell} of ${j.progress.cells}`;
            const source = document.getElementById("job-source");
            if (source && j.progress.source) source.textContent = j.progress.source;
            const bar = document.getElementById("job-progress-bar");
            if (bar) bar.setAttribute("width", String(Math.max(0, j.progress.cell - 1) * 100 / j.progress.cells));
          } else if (j.progress && !cell) {
            window.location.reload(); // the progress block appears with the first cell
            return;
          }
          if (!j.transient) {
            setTimeout(() => window.location.reload(), 500);
            return;
          }
        }
      } catch (e) { /* try again */ }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  }
}
