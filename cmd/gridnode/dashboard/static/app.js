// The gridnode dashboard: asks the daemon (through `gridnode dashboard`, same origin) for
// its status, jobs, peers and credit every 2 seconds and draws them. Text from the daemon
// (peers' agent strings, errors) goes in through textContent only.
"use strict";

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function short(s) {
  if (!s) return "";
  return s.length <= 16 ? s : s.slice(0, 8) + "…" + s.slice(-6);
}

function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + u[i];
}

function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d > 0) return d + "d " + h + "h";
  if (h > 0) return h + "h " + m + "m";
  if (m > 0) return m + "m " + (s % 60) + "s";
  return s + "s";
}

function when(t) {
  const d = new Date(t);
  if (isNaN(d)) return "–";
  const p = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + clock(d);
}

function clock(t) {
  const d = new Date(t);
  return isNaN(d) ? "–" : d.toLocaleTimeString([], { hour12: false });
}

function outcome(j) {
  if (!j.status) return j.error_kind || (j.error ? "failed" : "–");
  if (j.status === "exited") return "exited " + j.exit_code;
  return j.signal ? j.status + " " + j.signal : j.status;
}

// get fetches a data path, relative to the page (the dashboard serves under a random
// path prefix); null for 204 (a path the daemon does not have).
async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (r.status === 401) throw new Error("the dashboard's token is no longer valid: open the URL 'gridnode dashboard' printed");
  if (!r.ok) throw new Error(path + ": " + (await r.text()).trim());
  return r.status === 204 ? null : r.json();
}

function setConn(ok, msg) {
  const c = $("conn");
  c.textContent = msg;
  c.className = "badge " + (ok ? "ok" : "bad");
}

function renderStatus(st) {
  $("peer-id").textContent = st.peer_id;
  $("peer-id").title = (st.addrs || []).join("\n");
  const r = $("reachability");
  r.textContent = st.reachability;
  r.className = "badge " + (st.reachability === "public" || st.reachability === "loopback" || st.reachability === "nat-punch" ? "ok" : "warn");

  const reasons = st.reasons || [];
  const h = $("health");
  if (st.paused || st.load_paused) {
    h.textContent = "paused";
    h.className = "value warn";
    $("health-note").textContent = st.paused ? "by the donor: gridnode resume" : "the machine is busy (load " + st.load.toFixed(2) + ")";
  } else if (reasons.length > 0 && st.slots_busy === 0) {
    h.textContent = "attention";
    h.className = "value warn";
    $("health-note").textContent = reasons.length + (reasons.length === 1 ? " reason" : " reasons") + " below";
  } else {
    h.textContent = "healthy";
    h.className = "value ok";
    $("health-note").textContent = st.worker ? (st.announced ? "worker, announced" : "worker") : "submit-only node";
  }
  $("reasons-panel").hidden = reasons.length === 0;
  $("reasons").replaceChildren(...reasons.map((x) => el("li", x)));

  const hist = st.history || {};
  $("cpu-donated").textContent = st.cpu_seconds_donated.toFixed(1);
  $("cpu-note").textContent = hist.since ? "since " + when(hist.since).slice(0, 10) : "";
  $("jobs-run").textContent = st.jobs_run;
  $("jobs-note").textContent = hist.jobs_run_ok !== undefined ? hist.jobs_run_ok + " with a result" : "";
  $("running").textContent = st.worker ? st.slots_busy : "–";
  $("slots").textContent = st.worker ? "of " + (st.slots_busy + st.slots_free) + " slots" : "not a worker";
  $("peer-count").textContent = st.connected_peers;
  $("routing").textContent = st.routing_table + " in the routing table";
  $("submitted").textContent = hist.jobs_submitted !== undefined ? hist.jobs_submitted : "–";
  $("accepted").textContent = hist.jobs_accepted !== undefined ? hist.jobs_accepted + " accepted" : "";
  $("store").textContent = bytes(st.store_used_bytes);
  $("store-note").textContent = "of " + bytes(st.store_quota_bytes);
  const frac = st.store_quota_bytes > 0 ? Math.min(1, st.store_used_bytes / st.store_quota_bytes) : 0;
  $("store-bar").style.width = (100 * frac).toFixed(1) + "%"; // CSSOM, which the CSP allows
  $("uptime").textContent = duration(st.uptime_seconds);
  $("started").textContent = "since " + when(st.started);
}

function renderJobs(list) {
  const rows = list.map((j) => {
    const tr = el("tr");
    const ran = j.kind === "ran";
    const peerOrVerdict = ran ? short(j.submitter) : (j.accepted ? "accepted" : (j.error_kind || "not accepted"));
    const cls = j.error || (!ran && !j.accepted) ? "bad" : (j.status === "exited" && j.exit_code === 0 ? "ok" : "warn");
    tr.append(
      el("td", j.id),
      el("td", j.kind),
      el("td", clock(j.end)),
      el("td", short(j.job_cid), "mono"),
      el("td", outcome(j), cls),
      el("td", ran ? (j.cpu_ms / 1000).toFixed(2) + " s" : ""),
      el("td", peerOrVerdict, ran ? "mono" : ""),
    );
    if (j.error) tr.title = j.error;
    return tr;
  });
  $("jobs").replaceChildren(...rows.slice(0, 15));
  $("jobs-empty").hidden = rows.length > 0;
}

function renderPeers(ps) {
  $("peers").replaceChildren(...ps.map((p) => {
    const tr = el("tr");
    tr.title = (p.agent || "") + "\n" + (p.addrs || []).join("\n");
    tr.append(
      el("td", short(p.peer_id), "mono"),
      el("td", p.direction + (p.relayed ? ", relayed" : "")),
      el("td", p.latency_ms.toFixed(1) + " ms"),
      el("td", p.routing ? "yes" : "no"),
    );
    return tr;
  }));
}

// The credit panel shows what /v1/credit answers: its numbers as figures, and its
// by_submitter list (or else its first list of objects) as a table.
function renderCredit(c) {
  const fmt = (v) => typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : v;
  const figs = el("div", null, "figs");
  for (const [k, v] of Object.entries(c)) {
    if (typeof v === "number") {
      const f = el("div", null, "fig");
      f.append(el("div", k.replaceAll("_", " "), "label"), el("div", fmt(v), "value small"));
      figs.append(f);
    }
  }
  const list = Array.isArray(c.by_submitter) ? c.by_submitter
    : Object.values(c).find((v) => Array.isArray(v) && v.length > 0 && typeof v[0] === "object");
  const kids = [figs];
  if (list && list.length > 0) {
    const keys = Object.keys(list[0]).filter((x) => typeof list[0][x] !== "object").slice(0, 4);
    const head = el("tr");
    head.append(...keys.map((x) => el("th", x.replaceAll("_", " "))));
    const thead = el("thead");
    thead.append(head);
    const body = el("tbody");
    body.append(...list.slice(0, 8).map((row) => {
      const tr = el("tr");
      tr.append(...keys.map((x) => {
        const v = row[x];
        return typeof v === "string" && v.length > 24 ? el("td", short(v), "mono") : el("td", fmt(v));
      }));
      return tr;
    }));
    const table = el("table");
    table.append(thead, body);
    kids.push(table);
  }
  $("credit").replaceChildren(...kids);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// cpuSeries is the all-time CPU seconds donated at the end of each job in the list (newest
// first), counted back from the total: the jobs that count in it are those run with a
// result.
function cpuSeries(st, list) {
  let total = ((st.history && st.history.cpu_ms_donated) || st.cpu_seconds_donated * 1000) / 1000;
  const pts = [[Date.now(), total]];
  for (const j of list) {
    if (j.kind !== "ran" || j.error) continue;
    const t = Date.parse(j.end);
    pts.push([t, total]);
    total = Math.max(0, total - j.cpu_ms / 1000);
    pts.push([t, total]);
  }
  if (pts.length === 1) pts.push([Date.now() - 60000, total]);
  return pts.reverse();
}

// nice rounds v up to a round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of
// ten), for the chart's scale.
function nice(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function renderChart(pts) {
  const c = $("chart");
  // The drawing is in the element's own pixels, so that text is not stretched.
  const W = Math.max(300, Math.round(c.getBoundingClientRect().width) || 900), H = 220, L = 56, R = 12, T = 12, B = 28;
  c.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
  const ymax = nice(Math.max(1, ...pts.map((p) => p[1])) * 1.05);
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => H - B - (H - T - B) * v / ymax;
  const line = pts.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
  const kids = [];
  for (let i = 0; i <= 5; i++) {
    const v = ymax * i / 5; // a nice ymax over 5: a nice step
    kids.push(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    kids.push(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, String(Number(v.toFixed(2)))));
  }
  kids.push(svg("path", { d: line + ` L${x(t1)} ${y(0)} L${x(t0)} ${y(0)} Z`, class: "area" }));
  kids.push(svg("path", { d: line, class: "line" }));
  kids.push(svg("text", { x: L, y: H - 8, class: "axis" }, clock(t0)));
  kids.push(svg("text", { x: W - R, y: H - 8, "text-anchor": "end", class: "axis" }, clock(t1)));
  c.replaceChildren(...kids);
}

let creditGone = false; // the daemon has no /v1/credit

async function refresh() {
  try {
    const [st, jobs, peers, credit] = await Promise.all([
      get("v1/status"),
      get("v1/jobs?limit=200").catch(() => ({ jobs: [] })), // a node without a history
      get("v1/peers"),
      creditGone ? null : get("v1/credit").catch(() => null),
    ]);
    renderStatus(st);
    renderJobs(jobs.jobs || []);
    renderPeers(peers.peers || []);
    renderChart(cpuSeries(st, jobs.jobs || []));
    creditGone = credit === null;
    $("credit-panel").hidden = creditGone;
    if (!creditGone) renderCredit(credit);
    setConn(true, "live");
    $("updated").textContent = "updated " + clock(Date.now());
  } catch (e) {
    setConn(false, "daemon unreachable");
    $("updated").textContent = e.message;
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
