// The tablesync dashboard: reads the admin API with the bearer token kept in
// this tab's sessionStorage, renders with DOM nodes (never HTML strings, as
// record messages come from outside), and refreshes itself.
"use strict";

const TOKEN_KEY = "tablesync.adminToken";
const REFRESH_MS = 5000;
const RUN_REFRESH_MS = 1000;
const COUNTS = ["inserted", "modified", "deleted", "unchanged", "skipped", "failed", "pending", "coupled"];
const PALETTE = ["#1f6feb", "#1a7f37", "#c2410c", "#7c3aed", "#0b7a75", "#b91c1c", "#a16207", "#475569"];
const DIRECTIONS = {
  to_integration: ["→", "BC → Dataverse"],
  from_integration: ["←", "Dataverse → BC"],
  bidirectional: ["⇄", "Bidirectional"],
};

const state = {
  mappings: [],
  lag: null,
  selectedJob: null,
  problemsMapping: null,
  acting: false,
  pendingDelete: null,
  runId: null,
  runTimer: null,
  // The run whose question the dialog asks, and the runs answered from this page.
  questionRun: null,
  answered: new Set(),
  refreshTimer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    // Through CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (key === "style") Object.assign(node.style, value);
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// Token and API

function takeTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new Unauthorized("no token");
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) throw new Unauthorized(data.error || "unauthorized");
  if (!response.ok) {
    const error = new Error(data.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.data = data;
    throw error;
  }
  return data;
}

// Formatting

function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  const clock = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  return sameDay ? clock : `${d.toLocaleDateString()} ${clock}`;
}

function ago(iso) {
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  return `${m} min ${Math.round(seconds % 60)} s`;
}

function direction(value) {
  const [arrow, label] = DIRECTIONS[value] || ["", value];
  return el("span", { class: "direction", title: value }, el("span", { class: "arrow", text: arrow }), label);
}

// Where a job's records went: the short form the job and error tables use.
function destination(value) {
  const target = value === "to_integration" ? "Dataverse" : "BC";
  return el("span", { class: "direction", title: DIRECTIONS[value] ? DIRECTIONS[value][1] : value }, el("span", { class: "arrow", text: "→" }), target);
}

function chip(status) {
  return el("span", { class: `chip ${status}`, text: status });
}

function countCell(name, value) {
  return el("td", { class: "num" }, el("span", { class: value ? `count ${name}` : "count", text: value }));
}

function countsSummary(counts) {
  const parts = COUNTS.filter((c) => counts[c]).map((c) => `${c} ${counts[c]}`);
  return parts.length ? parts.join(" · ") : "no changes";
}

function toast(message, kind = "info") {
  const node = el("div", { class: `toast ${kind}`, role: "status", text: message });
  $("toasts").append(node);
  setTimeout(() => node.remove(), 6000);
}

function emptyRow(table, columns, message) {
  table.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: columns, text: message })));
}

// Mappings

function renderMappings() {
  const body = $("mappings-table").tBodies[0];
  if (!state.mappings.length) return emptyRow(body, 6, "No mappings are loaded.");
  const lagByMapping = new Map((state.lag ? state.lag.mappings : []).map((m) => [m.mapping, m]));
  body.replaceChildren(
    ...state.mappings.map((m) => {
      const lag = lagByMapping.get(m.name);
      const lagCell = lag
        ? el("span", { class: `lag ${lag.lag ? "some" : "zero"}`, title: lag.oldest_age_s ? `oldest ${duration(lag.oldest_age_s)}` : "", text: lag.lag })
        : el("span", { class: "lag zero", text: "–" });
      const job = m.last_job;
      const flow = m.last_continuous;
      // The last job someone started (a run's step, a replay, a record action)
      // keeps its outcome; continuous work, which rolls over every interval and
      // also counts the echoes of a run's own writes, is a line of its own.
      const last = el("div", { class: "last-job" },
        job
          ? [
              el("div", { class: "last-job-head", "data-job-id": job.job_id, "data-run-id": job.run_id || "", "data-kind": job.kind },
                chip(job.status), el("span", { class: "muted small", text: `${job.kind} · ${ago(job.started_at)}` })),
              el("div", { class: "summary", text: countsSummary(job.counts) }),
            ]
          : el("span", { class: "muted", text: flow ? "no run yet" : "never synchronized" }),
        flow
          ? el("div", { class: "continuous", "data-job-id": flow.job_id, title: `Continuous changes in the interval from ${time(flow.started_at)}` },
              `continuous · ${ago(flow.started_at)} · ${countsSummary(flow.counts)}`)
          : null);
      return el("tr", { "data-mapping": m.name, title: `Show the errors of ${m.name}`, onclick: () => selectProblemsMapping(m.name) },
        el("td", {}, el("div", { class: "mapping-name", text: m.name }), el("div", { class: "tables", text: `${m.bc_table} ⇄ ${m.dataverse_table}` })),
        el("td", {}, direction(m.direction)),
        el("td", { text: m.sync_only_coupled ? "Yes" : "No" }),
        el("td", { class: "num" }, lagCell),
        el("td", {}, last),
        el("td", { class: "num" },
          el("button", { type: "button", class: "btn small", "data-sync": m.name, title: `Synchronize modified records of ${m.name}`, onclick: (event) => { event.stopPropagation(); syncModified(m.name); }, text: "Sync" })));
    }),
  );
  const select = $("filter-mapping");
  const names = state.mappings.map((m) => m.name);
  if (select.dataset.names !== names.join(",")) {
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "", text: "All mappings" }), ...names.map((n) => el("option", { value: n, text: n })));
    select.value = chosen;
    select.dataset.names = names.join(",");
  }
}

// Jobs and errors

function jobQuery() {
  const params = new URLSearchParams({ limit: "100" });
  for (const [id, key] of [["filter-mapping", "mapping"], ["filter-kind", "kind"], ["filter-status", "status"], ["filter-run", "run"]]) {
    const value = $(id).value.trim();
    if (value) params.set(key, value);
  }
  return params.toString();
}

async function loadJobs() {
  const body = $("jobs-table").tBodies[0];
  let jobs;
  try {
    jobs = await api(`/api/jobs?${jobQuery()}`);
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    return emptyRow(body, 15, error.message);
  }
  if (!jobs.length) return emptyRow(body, 15, "No synchronization jobs match.");
  body.replaceChildren(
    ...jobs.map((j) => el("tr", {
        "data-job-id": j.job_id,
        "data-run-id": j.run_id || "",
        class: state.selectedJob && state.selectedJob.job_id === j.job_id ? "selected" : "",
        onclick: () => selectJob(j),
      },
      el("td", { class: "when", text: time(j.started_at) }),
      el("td", { class: "mapping-name", text: j.mapping }),
      el("td", {}, destination(j.direction)),
      el("td", { text: j.kind }),
      el("td", {}, chip(j.status)),
      ...["inserted", "modified", "deleted", "unchanged", "skipped", "failed", "pending", "coupled"].map((c) => countCell(c, j.counts[c])),
      el("td", { class: "num when", text: duration(j.duration_s) }),
      el("td", { class: "message", title: j.message, text: j.message }))),
  );
}

async function selectJob(job) {
  state.selectedJob = job;
  for (const row of $("jobs-table").tBodies[0].rows) row.classList.toggle("selected", row.dataset.jobId === job.job_id);
  await loadErrors();
}

async function loadErrors() {
  const job = state.selectedJob;
  if (!job) return;
  const card = $("errors-card");
  card.hidden = false;
  $("errors-title").textContent = `Synchronization errors · ${job.mapping} · ${DIRECTIONS[job.direction][1]} · ${time(job.started_at)}`;
  const body = $("errors-table").tBodies[0];
  const errors = await api(`/api/jobs/${job.job_id}/errors?limit=200`);
  if (!errors.length) return emptyRow(body, 5, "This job has no errors.");
  body.replaceChildren(
    ...errors.map((e) => el("tr", {},
      el("td", { class: "when", text: time(e.occurred_at) }),
      el("td", {}, destination(e.direction)),
      el("td", {}, el("code", { text: `${e.source_side} ${e.source_id}` })),
      el("td", {}, e.destination_id ? el("code", { text: e.destination_id }) : el("span", { class: "muted", text: "–" })),
      el("td", { title: e.detail || e.message, text: e.message }))),
  );
}

// Coupled data synchronization errors and the actions on them

const ACTION_NAMES = {
  retry: "Retry",
  restore: "Restore",
  delete_records: "Delete records",
  delete_couplings: "Delete couplings",
  find_deleted: "Find deleted couplings",
  sync_now: "Synchronize now",
};

function sideName(side) {
  return side === "bc" ? "BC" : "Dataverse";
}

function recordCell(id) {
  return el("td", {}, id ? el("code", { text: id }) : el("span", { class: "muted", text: "–" }));
}

function selectProblemsMapping(name) {
  state.problemsMapping = name;
  $("problems-mapping").value = name;
  for (const row of $("mappings-table").tBodies[0].rows) row.classList.toggle("selected", row.dataset.mapping === name);
  loadProblems().catch(() => {});
}

function renderProblemsMappings() {
  const select = $("problems-mapping");
  const names = state.mappings.map((m) => m.name);
  if (!state.problemsMapping || !names.includes(state.problemsMapping)) state.problemsMapping = names[0] || null;
  if (select.dataset.names !== names.join(",")) {
    select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    select.dataset.names = names.join(",");
  }
  if (state.problemsMapping) select.value = state.problemsMapping;
  for (const row of $("mappings-table").tBodies[0].rows) row.classList.toggle("selected", row.dataset.mapping === state.problemsMapping);
}

async function loadProblems() {
  const body = $("problems-table").tBodies[0];
  const mapping = state.problemsMapping;
  if (!mapping) return emptyRow(body, 8, "No mappings are loaded.");
  const params = new URLSearchParams({ mapping, limit: "200" });
  if ($("problems-skipped").checked) params.set("skipped", "true");
  let problems;
  try {
    problems = await api(`/api/errors?${params}`);
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    return emptyRow(body, 8, error.message);
  }
  // A refresh started before another mapping was chosen must not draw over it.
  if (mapping !== state.problemsMapping) return;
  if (!problems.length) return emptyRow(body, 8, `${mapping} has no records that did not sync.`);
  body.replaceChildren(...problems.map((p) => problemRow(mapping, p)));
}

function problemRow(mapping, p) {
  const deleted = p.reason === "deleted";
  const coupled = Boolean(p.bc_id && p.dataverse_id);
  const button = (action, label, enabled, title, onclick, extra) =>
    el("button", { type: "button", class: `btn small${extra || ""}`, "data-action": action, disabled: !enabled || state.acting, title, onclick, text: label });
  return el("tr", { "data-record-id": p.source_id, "data-bc-id": p.bc_id || "", "data-dataverse-id": p.dataverse_id || "", "data-status": p.status, "data-reason": p.reason },
    el("td", { class: "when", text: time(p.last_failed_at) }),
    el("td", {}, chip(p.status)),
    el("td", { text: p.reason }),
    recordCell(p.bc_id),
    recordCell(p.dataverse_id),
    el("td", { class: "num", title: `${p.same_failures} the same in a row`, text: p.attempts }),
    el("td", { class: "message", title: p.message, text: p.message }),
    el("td", {}, el("div", { class: "row-actions" },
      button("history", "History", true, "What tablesync decided for this record, and in which jobs",
        () => loadHistory(mapping, p.source_side, p.source_id).catch(() => {})),
      button("retry", "Retry", true, "Clear the skip and sync it now, in its direction",
        () => act("retry", { mapping, ids: [p.source_id] })),
      button("restore", "Restore", deleted, deleted ? `Re-create the deleted ${sideName(p.source_side)} record from the other side` : "Only for a coupled record that was deleted",
        () => act("restore", { mapping, ids: [p.source_id] })),
      button("delete-records", "Delete record", deleted, deleted ? `Delete the surviving record on ${sideName(p.source_side === "bc" ? "dataverse" : "bc")}` : "Only for a coupled record that was deleted",
        () => askDelete(mapping, p), " danger-text"),
      button("delete-couplings", "Delete coupling", coupled, coupled ? "Uncouple the two records; neither record changes" : "The record has no coupling",
        () => act("delete_couplings", { mapping, ids: [p.bc_id] })))));
}

// One record's history: the record log of it and its counterpart.

async function loadHistory(mapping, side, id) {
  const card = $("history-card");
  card.hidden = false;
  card.dataset.recordId = id;
  $("history-title").textContent = `Record history · ${mapping} · ${sideName(side)} ${id}`;
  const body = $("history-table").tBodies[0];
  let entries;
  try {
    entries = await api(`/api/records/${encodeURIComponent(mapping)}/log?${new URLSearchParams({ side, id, limit: "200" })}`);
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    return emptyRow(body, 7, error.message);
  }
  // A later choice of record must not be drawn over.
  if (card.dataset.recordId !== id) return;
  if (!entries.length) return emptyRow(body, 7, "No decision on this record is kept (rows go with their jobs).");
  body.replaceChildren(
    ...entries.map((e) => el("tr", { "data-decision": e.decision.join(" "), "data-job-id": e.job_id },
      el("td", { class: "when", text: time(e.at) }),
      el("td", {}, ...e.decision.map(chip)),
      el("td", {}, e.direction ? destination(e.direction) : el("span", { class: "muted", text: "–" })),
      el("td", {}, el("code", { text: `${e.source_side} ${e.source_id}` })),
      el("td", { text: e.fields.join(", ") }),
      el("td", {}, el("code", { text: e.job_id })),
      el("td", { class: "message", title: e.message, text: e.message }))),
  );
}

function askDelete(mapping, p) {
  const survivor = p.source_side === "bc" ? "dataverse" : "bc";
  const survivorId = survivor === "bc" ? p.bc_id : p.dataverse_id;
  state.pendingDelete = { mapping, ids: [p.source_id], confirm: true };
  $("confirm-delete-text").textContent =
    `The ${sideName(p.source_side)} record ${p.source_id} of ${mapping} was deleted. ` +
    `Its counterpart, ${sideName(survivor)} record ${survivorId}, is deleted too. This cannot be undone.`;
  $("confirm-delete").hidden = false;
  $("confirm-delete-cancel").focus();
}

function closeDelete() {
  state.pendingDelete = null;
  $("confirm-delete").hidden = true;
}

async function confirmDelete() {
  const body = state.pendingDelete;
  closeDelete();
  if (body) await act("delete_records", body);
}

function showResult(action, result, error) {
  const node = $("problems-result");
  node.hidden = false;
  node.dataset.action = action;
  node.classList.toggle("error", Boolean(error));
  if (error) {
    node.dataset.outcome = "refused";
    node.textContent = `${ACTION_NAMES[action]}: ${error.message}`;
    return;
  }
  node.dataset.outcome = "done";
  const counts = Object.entries(result.counts).map(([k, v]) => `${k} ${v}`).join(" · ") || "nothing to do";
  const jobs = result.jobs.length === 1 ? "1 job" : `${result.jobs.length} jobs`;
  node.textContent = `${ACTION_NAMES[action]}: ${result.records} record${result.records === 1 ? "" : "s"} · ${counts} · ${jobs}`;
}

async function act(action, body) {
  await runAction(action, () => api(`/api/errors/${action.replaceAll("_", "-")}`, { method: "POST", body }));
}

async function runAction(action, call) {
  if (state.acting) return;
  state.acting = true;
  for (const button of $("problems-card").querySelectorAll("button")) button.disabled = true;
  try {
    const result = await call();
    showResult(action, result, null);
    toast(`${ACTION_NAMES[action]} done`);
  } catch (error) {
    if (error instanceof Unauthorized) return signOut("Your token was refused.");
    showResult(action, null, error);
    toast(error.message, "error");
  } finally {
    state.acting = false;
    for (const button of $("problems-card").querySelectorAll("form button")) button.disabled = false;
  }
  await Promise.all([loadProblems(), loadJobs()]).catch(() => {});
}

// Lag chart

async function loadLag() {
  try {
    state.lag = await api("/api/lag");
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    state.lag = null;
  }
  let history = { series: [] };
  try {
    history = await api("/api/lag/history?minutes=60");
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
  }
  renderChart(history.series);
}

// Four gridlines at round values: 0..4 for small lags, else steps of 1, 2 or 5 × 10^n.
function yScale(max) {
  if (max <= 4) return { top: 4, step: 1 };
  const raw = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((s) => s * magnitude).find((s) => s >= raw);
  return { top: step * 4, step };
}

function renderChart(series) {
  const W = 560, H = 210, left = 40, right = 12, top = 10, bottom = 24;
  const now = Date.now(), from = now - 3600 * 1000;
  const { top: ymax, step } = yScale(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p.lag))));
  const x = (t) => left + ((t - from) / (now - from)) * (W - left - right);
  const y = (v) => top + (1 - v / ymax) * (H - top - bottom);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Consumer lag per mapping over the last hour" });
  for (let i = 0; i <= 4; i++) {
    const v = step * i;
    root.append(svg("line", { class: i ? "grid-line" : "axis", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
    root.append(svg("text", { class: "label", x: left - 6, y: y(v) + 3, "text-anchor": "end" }, v.toLocaleString()));
  }
  for (const minutes of [60, 45, 30, 15, 0]) {
    const t = now - minutes * 60 * 1000;
    root.append(svg("text", { class: "label", x: x(t), y: H - 6, "text-anchor": minutes === 60 ? "start" : minutes === 0 ? "end" : "middle" }, minutes ? `−${minutes} min` : "now"));
  }
  const colours = new Map(state.mappings.map((m, i) => [m.name, PALETTE[i % PALETTE.length]]));
  let drawn = 0;
  for (const s of series) {
    const points = s.points.map((p) => [x(new Date(p.at).getTime()), y(p.lag)]).filter(([px]) => px >= left);
    if (!points.length) continue;
    drawn++;
    const colour = colours.get(s.mapping) || PALETTE[drawn % PALETTE.length];
    if (points.length === 1) root.append(svg("circle", { cx: points[0][0], cy: points[0][1], r: 3, fill: colour }));
    else root.append(svg("polyline", { class: "line", stroke: colour, points: points.map((p) => p.join(",")).join(" ") }));
  }
  if (!drawn) root.append(svg("text", { class: "no-data", x: W / 2, y: H / 2, "text-anchor": "middle" }, "No lag samples yet"));
  $("lag-chart").replaceChildren(root);
  const current = new Map((state.lag ? state.lag.mappings : []).map((m) => [m.mapping, m.lag]));
  $("lag-legend").replaceChildren(
    ...state.mappings.map((m) => el("li", {},
      el("span", { class: "swatch", style: { background: colours.get(m.name) } }),
      m.name, " ", el("b", { text: current.has(m.name) ? current.get(m.name) : "–" }))),
  );
}

// Runs

async function startFullSync() {
  $("confirm").hidden = true;
  const unconditional = $("confirm-unconditional").checked;
  // As BC does, the run asks at its end whether to keep "sync only coupled
  // records" cleared; the dialog below answers.
  await startRun("/api/runs/full-sync", { ask: true, unconditional },
    unconditional ? "Unconditional full synchronization started" : "Full synchronization started");
}

async function startCoupling() {
  $("confirm-coupling").hidden = true;
  const body = { create_new: $("coupling-create-new").checked, sync_after: $("coupling-sync-after").checked };
  await startRun("/api/runs/couple-by-match", body, "Coupling by match started");
}

async function startRun(path, body, started) {
  try {
    const accepted = await api(path, { method: "POST", body });
    toast(started);
    showRun(accepted.run_id);
  } catch (error) {
    if (error instanceof Unauthorized) return signOut("Your token was refused.");
    toast(error.message, "error");
    if (error.status === 409 && error.data && error.data.run_id) showRun(error.data.run_id);
  }
}

async function cancelRun() {
  const runId = $("run-panel").dataset.runId;
  if (!runId) return;
  $("run-cancel").disabled = true;
  try {
    await api(`/api/runs/${runId}/cancel`, { method: "POST", body: {} });
    toast("Run cancelled: the mapping being synchronized finishes its step");
  } catch (error) {
    if (error instanceof Unauthorized) return signOut("Your token was refused.");
    toast(error.message, "error");
  }
  $("run-cancel").disabled = false;
  showRun(runId);
}

async function syncNow() {
  const mapping = state.problemsMapping;
  const side = $("sync-now-side").value;
  const id = $("sync-now-id").value.trim();
  if (!mapping || !id) return;
  await runAction("sync_now", () =>
    api(`/api/records/${encodeURIComponent(mapping)}/${side}/${encodeURIComponent(id)}/sync`, { method: "POST", body: {} }));
}

async function syncModified(mapping) {
  try {
    const accepted = await api("/api/runs/sync-modified", { method: "POST", body: { mapping } });
    toast(`Synchronizing modified records of ${mapping}`);
    showRun(accepted.run_id);
  } catch (error) {
    if (error instanceof Unauthorized) return signOut("Your token was refused.");
    toast(error.message, "error");
  }
}

function showRun(runId) {
  state.runId = runId;
  clearTimeout(state.runTimer);
  pollRun();
}

async function pollRun() {
  if (!state.runId) return;
  let run;
  try {
    run = await api(`/api/runs/${state.runId}`);
  } catch (error) {
    if (error instanceof Unauthorized) return signOut("Your token was refused.");
    state.runTimer = setTimeout(pollRun, RUN_REFRESH_MS * 3);
    return;
  }
  renderRun(run);
  if (!run.done) state.runTimer = setTimeout(pollRun, RUN_REFRESH_MS);
  else refresh();
}

function askKeep(run) {
  const names = run.mappings.length ? run.mappings : state.mappings.map((m) => m.name);
  state.questionRun = run.run_id;
  $("keep-question").dataset.runId = run.run_id;
  $("keep-question-text").textContent =
    `The full synchronization is done. Keep "sync only coupled records" cleared on ${names.join(", ")}, ` +
    "so new records keep being created and coupled, or restore each mapping's setting? " +
    "Without an answer it is restored.";
  $("keep-question").hidden = false;
  $("keep-restore").focus();
}

function closeKeep() {
  state.questionRun = null;
  $("keep-question").hidden = true;
}

async function answerKeep(keep) {
  const runId = state.questionRun;
  closeKeep();
  if (!runId) return;
  const node = $("run-answer");
  node.hidden = false;
  node.classList.remove("waiting");
  try {
    await api(`/api/runs/${runId}/answer`, { method: "POST", body: { keep } });
    state.answered.add(runId);
    node.dataset.answer = keep ? "keep" : "restore";
    node.textContent = keep
      ? "Answered: keep \"sync only coupled records\" cleared."
      : "Answered: restore \"sync only coupled records\".";
    toast(keep ? "Sync only coupled records stays cleared" : "Sync only coupled records is restored");
  } catch (error) {
    if (error instanceof Unauthorized) return signOut("Your token was refused.");
    node.dataset.answer = "refused";
    node.textContent = `Answer not taken: ${error.message}`;
    toast(error.message, "error");
  }
  if (state.runId === runId) showRun(runId);
}

function renderQuestion(run) {
  const node = $("run-answer");
  if (run.question && !state.answered.has(run.run_id)) {
    node.hidden = false;
    node.classList.add("waiting");
    node.dataset.answer = "";
    node.textContent = "Waiting for an answer: keep \"sync only coupled records\" cleared?";
    if (state.questionRun !== run.run_id) askKeep(run);
    return;
  }
  // Answered elsewhere, or the run ended (its wait ran out, it was cancelled).
  if (state.questionRun === run.run_id) closeKeep();
  node.classList.remove("waiting");
  if (!node.dataset.answer) node.hidden = true;
}

function renderRun(run) {
  if (run.run_id !== $("run-panel").dataset.runId) {
    $("run-answer").hidden = true;
    $("run-answer").dataset.answer = "";
  }
  const panel = $("run-panel");
  panel.hidden = false;
  panel.dataset.runId = run.run_id;
  panel.dataset.status = run.status;
  const what = { full: run.unconditional ? "Unconditional full synchronization" : "Full synchronization",
    coupling: "Coupling by match" }[run.kind] || "Synchronize modified records";
  $("run-cancel").hidden = run.done;
  $("run-title").textContent = run.mappings.length === 1 ? `${what} · ${run.mappings[0]}` : what;
  const started = run.started_at || run.requested_at;
  const end = run.finished_at ? new Date(run.finished_at) : new Date();
  const took = duration((end - new Date(started)) / 1000);
  $("run-meta").textContent = `Run ${run.run_id} · requested by ${run.requested_by || "?"} at ${time(run.requested_at)} · ${took}${run.message ? ` · ${run.message}` : ""}`;
  $("run-status").replaceWith(Object.assign(chip(run.status), { id: "run-status" }));
  const names = run.mappings.length ? run.mappings : state.mappings.map((m) => m.name);
  $("run-steps").replaceChildren(
    ...names.map((name) => {
      const jobs = run.jobs.filter((j) => j.mapping === name);
      let status = "waiting";
      if (jobs.length) {
        if (jobs.some((j) => j.status === "failed")) status = "failed";
        else if (jobs.every((j) => j.status === "finished")) status = "finished";
        else status = "running";
      } else if (run.done) status = "skipped";
      const parts = jobs.reduce((n, j) => n + (j.partitions || 0), 0);
      const doneParts = jobs.reduce((n, j) => n + j.partitions_finished, 0);
      let share = 0;
      if (status === "finished" || status === "failed" || status === "skipped") share = 1;
      else if (parts) share = Math.min(doneParts / parts, 0.98);
      const counts = {};
      for (const j of jobs) for (const c of COUNTS) counts[c] = (counts[c] || 0) + j.counts[c];
      return el("div", { class: `step ${status}`, "data-step": name, "data-status": status },
        el("div", { class: "step-head" }, el("span", { class: "step-name", text: name }), chip(status)),
        el("div", { class: "bar" }, el("span", { style: { width: `${Math.round(share * 100)}%` } })),
        el("div", { class: "step-counts", text: jobs.length ? countsSummary(counts) : (status === "skipped" ? "not part of this run" : "waiting for its turn") }));
    }),
  );
  renderQuestion(run);
}

// Refresh loop

async function refresh() {
  clearTimeout(state.refreshTimer);
  try {
    state.mappings = await api("/api/mappings");
    await loadLag();
    renderMappings();
    renderProblemsMappings();
    await loadJobs();
    if (!state.acting) await loadProblems();
    if (state.selectedJob) await loadErrors();
    if (!state.runId) {
      const [latest] = await api("/api/runs?limit=1");
      if (latest && (latest.status === "requested" || latest.status === "running")) showRun(latest.run_id);
    }
    $("refreshed").textContent = `Updated ${time(new Date().toISOString())}`;
  } catch (error) {
    if (error instanceof Unauthorized) return signOut(sessionStorage.getItem(TOKEN_KEY) ? "Your token was refused." : "");
    $("refreshed").textContent = `Refresh failed: ${error.message}`;
  }
  state.refreshTimer = setTimeout(refresh, REFRESH_MS);
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(state.refreshTimer);
  clearTimeout(state.runTimer);
  state.runId = null;
  $("app").hidden = true;
  $("actions").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token-input").focus();
}

function signedIn() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("actions").hidden = false;
  refresh();
}

function wire() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    signedIn();
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("full-sync").addEventListener("click", () => { $("confirm").hidden = false; $("confirm-start").focus(); });
  $("confirm-cancel").addEventListener("click", () => { $("confirm").hidden = true; });
  $("confirm-start").addEventListener("click", startFullSync);
  $("couple-by-match").addEventListener("click", () => { $("confirm-coupling").hidden = false; $("coupling-start").focus(); });
  $("coupling-cancel").addEventListener("click", () => { $("confirm-coupling").hidden = true; });
  $("coupling-start").addEventListener("click", startCoupling);
  $("run-cancel").addEventListener("click", cancelRun);
  $("sync-now-form").addEventListener("submit", (event) => { event.preventDefault(); syncNow(); });
  $("errors-close").addEventListener("click", () => {
    state.selectedJob = null;
    $("errors-card").hidden = true;
    for (const row of $("jobs-table").tBodies[0].rows) row.classList.remove("selected");
  });
  $("history-close").addEventListener("click", () => {
    $("history-card").hidden = true;
    delete $("history-card").dataset.recordId;
  });
  $("problems-mapping").addEventListener("change", (event) => selectProblemsMapping(event.target.value));
  $("problems-skipped").addEventListener("change", () => loadProblems().catch(() => {}));
  $("problem-filters").addEventListener("submit", (event) => event.preventDefault());
  $("problems-retry-all").addEventListener("click", () => act("retry", { mapping: state.problemsMapping }));
  $("problems-find-deleted").addEventListener("click", () => act("find_deleted", { mapping: state.problemsMapping }));
  $("keep-cleared").addEventListener("click", () => answerKeep(true));
  $("keep-restore").addEventListener("click", () => answerKeep(false));
  $("confirm-delete-cancel").addEventListener("click", closeDelete);
  $("confirm-delete-go").addEventListener("click", confirmDelete);
  $("job-filters").addEventListener("change", () => loadJobs().catch(() => {}));
  $("job-filters").addEventListener("submit", (event) => { event.preventDefault(); loadJobs().catch(() => {}); });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    $("confirm").hidden = true;
    $("confirm-coupling").hidden = true;
    closeDelete();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wire();
  takeTokenFromUrl();
  if (sessionStorage.getItem(TOKEN_KEY)) signedIn();
  else signOut("");
});
