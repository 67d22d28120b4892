/**
 * `GET /`: the status snapshot as one small HTML page for a person.
 *
 * Self-contained (inline CSS, no scripts, no external assets) so it works on
 * a VM with no internet access and under a strict Content-Security-Policy;
 * it refreshes itself every 5 s. Every value from the snapshot goes through
 * `escapeHtml`: event messages and probe output can contain anything.
 */
import type { ActionRecord, ServiceStatus, StatusEvent, StatusSnapshot } from "./types.ts";

const ESCAPES: Readonly<Record<string, string>> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Escapes text for use in HTML element content and in quoted attribute values. */
export function escapeHtml(value: unknown): string {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top;white-space:pre-line}
th{background:#f0f0f0}.muted{color:#777}code{font-size:.95em}
.ok,.healthy,.ready,.info{color:#17702a}.failed,.unhealthy,.error{color:#b00020}
.degraded,.converging,.starting,.warn,.skipped,.unknown{color:#9a6700}
.box{background:#fff;border:1px solid #ddd;padding:.6em .8em;display:inline-block}
`;

function cell(value: unknown, cls?: string): string {
  return cls ? `<td class="${escapeHtml(cls)}">${escapeHtml(value)}</td>` : `<td>${escapeHtml(value)}</td>`;
}

function table(headers: readonly string[], rows: readonly string[], empty: string): string {
  if (rows.length === 0) return `<p class="muted">${escapeHtml(empty)}</p>`;
  const head = headers.map((h) => `<th>${escapeHtml(h)}</th>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function serviceRow(s: ServiceStatus): string {
  const probe = s.lastProbe
    ? `${s.lastProbe.ok ? "ok" : "failed"} ${s.lastProbe.kind} at ${s.lastProbe.at} (${s.lastProbe.latencyMs} ms): ${s.lastProbe.message}`
    : "none yet";
  return `<tr>${cell(s.name)}${cell(s.unit)}${cell(s.state)}${cell(s.health, s.health)}${cell(s.restarts)}${cell(probe)}${cell(lastExit(s))}</tr>`;
}

/** How the process last ended and the end of its log (scrubbed by the agent), shown while it is not running. */
function lastExit(s: ServiceStatus): string {
  if (!s.lastExit || s.state === "running") return "";
  const how = s.lastExit.signal ? `killed by ${s.lastExit.signal}` : `exit code ${s.lastExit.code}`;
  return [`${how} at ${s.lastExit.at}`, ...(s.lastExit.logTail ?? [])].join("\n");
}

function actionRow(a: ActionRecord): string {
  const error = a.error ? `${a.error.code}: ${a.error.message}` : "";
  return `<tr>${cell(a.kind)}${cell(a.target)}${cell(a.reason)}${cell(a.result, a.result)}${cell(a.durationMs)}${cell(error)}</tr>`;
}

function eventRow(e: StatusEvent): string {
  return `<tr>${cell(e.at)}${cell(e.level, e.level)}${cell(e.type)}${cell(e.message)}</tr>`;
}

/** One line on agent self-update: the version offered, the state and why, the last rollback. */
function updateLine(s: StatusSnapshot): string {
  const u = s.update;
  if (!u) return "";
  const rollback = u.rollback ? ` · <span class="warn">last rollback ${escapeHtml(u.rollback.from)} → ${escapeHtml(u.rollback.to)} at ${escapeHtml(u.rollback.at)}: ${escapeHtml(u.rollback.reason)}</span>` : "";
  return `<p>update (${escapeHtml(u.channel)}): <strong>${escapeHtml(u.state)}</strong>, running ${escapeHtml(u.current)}, offered ${escapeHtml(u.available ?? "unknown")}${u.stage ? `, stage ${escapeHtml(u.stage)}` : ""}: ${escapeHtml(u.reason)}${rollback}</p>`;
}

export function renderStatusPage(snapshot: StatusSnapshot): string {
  const s = snapshot;
  const role = s.role.name ?? "(none)";
  const error = s.error
    ? `<p class="error"><strong>${escapeHtml(s.error.code)}</strong>: ${escapeHtml(s.error.message)}</p>`
    : "";

  const lc = s.lastConverge;
  const converge = lc
    ? `<p>${escapeHtml(lc.startedAt)} → ${escapeHtml(lc.finishedAt)}, <span class="${lc.ok ? "ok" : "failed"}">${lc.ok ? "ok" : "failed"}</span>, ${escapeHtml(lc.passes)} pass(es)${lc.error ? `, <span class="error">${escapeHtml(lc.error.code)}: ${escapeHtml(lc.error.message)}</span>` : ""}</p>` +
      table(
        ["kind", "target", "reason", "result", "ms", "error"],
        lc.actions.map(actionRow),
        "nothing to do: already converged",
      )
    : `<p class="muted">no converge pass yet</p>`;

  const credentials = table(
    ["name", "path"],
    s.credentials.map((c) => `<tr>${cell(c.name)}<td><code>${escapeHtml(c.path)}</code></td></tr>`),
    "no generated credentials",
  );

  // Newest first: a person reads the top of the list.
  const events = table(["at", "level", "type", "message"], [...s.events].reverse().map(eventRow), "no events");

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>mlops-agent: ${escapeHtml(role)} ${escapeHtml(s.phase)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>mlops-agent <span class="muted">${escapeHtml(s.agent.version)} (${escapeHtml(s.agent.commit)})</span></h1>
<div class="box">
<div>role <strong>${escapeHtml(role)}</strong> <span class="muted">from ${escapeHtml(s.role.source)}</span></div>
<div>phase <strong class="${escapeHtml(s.phase)}">${escapeHtml(s.phase)}</strong>: ${escapeHtml(s.reason)}</div>
<div class="muted">pid ${escapeHtml(s.agent.pid)}, started ${escapeHtml(s.agent.startedAt)}, supervisor ${escapeHtml(s.agent.supervisor)}, node ${escapeHtml(s.agent.node)}</div>
</div>
${error}
${updateLine(s)}
<h2>Services</h2>
${table(["name", "unit", "state", "health", "restarts", "last probe", "last exit"], s.services.map(serviceRow), "no services")}
<h2>Last converge</h2>
${converge}
<h2>Credentials</h2>
${credentials}
<h2>Recent events</h2>
${events}
<p class="muted">JSON: <a href="/status">/status</a> · metrics: <a href="/metrics">/metrics</a> · this page refreshes every 5 s</p>
</body>
</html>
`;
}
