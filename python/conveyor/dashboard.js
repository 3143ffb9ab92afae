// The dashboard page: reads /api/overview every two seconds and draws it.
// Everything a job carries (types, errors, ids) is set with textContent,
// never parsed as markup. The token comes from the URL's fragment.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("token") || "";
sessionStorage.setItem("token", token);
history.replaceState(null, "", location.pathname);  // the token leaves the address bar
const colors = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#4e342e"];
let readOnly = true;

async function api(path, body) {
  const init = { headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function num(value) { return el("td", value, "num"); }

// Errors and confirmations share one line; the class tells a person which it is.
function say(text, isError = true) {
  const line = document.getElementById("message");
  line.textContent = text;
  line.className = isError ? "error" : "";
}

function fill(id, rows) { document.querySelector(`#${id} tbody`).replaceChildren(...rows); }

function plot(id, series, pick) {
  const svg = document.getElementById(id);
  const legend = document.getElementById(id + "-legend");
  const width = svg.clientWidth || 600, height = svg.clientHeight || 160;
  const lines = Object.entries(series).map(([name, points]) =>
    [name, points.map(p => [p[0], pick(p)]).filter(p => p[1] !== null && p[1] !== undefined)]);
  const all = lines.flatMap(([, points]) => points);
  svg.replaceChildren();
  legend.replaceChildren();
  if (all.length < 2) { legend.append(el("span", "collecting samples...")); return; }
  const t0 = Math.min(...all.map(p => p[0])), t1 = Math.max(...all.map(p => p[0]));
  const top = Math.max(1e-9, ...all.map(p => p[1]));
  const ns = "http://www.w3.org/2000/svg";
  lines.forEach(([name, points], i) => {
    const line = document.createElementNS(ns, "polyline");
    const xy = points.map(([t, v]) =>
      `${((t - t0) / Math.max(1e-9, t1 - t0) * (width - 10) + 5).toFixed(1)},${(height - 5 - v / top * (height - 20)).toFixed(1)}`);
    line.setAttribute("points", xy.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colors[i % colors.length]);
    line.setAttribute("stroke-width", "2");
    svg.append(line);
    const last = points.length ? points[points.length - 1][1] : 0;
    const key = el("span", `${name}: ${last.toFixed(1)}`);
    key.style.color = colors[i % colors.length];
    legend.append(key);
  });
  const scale = document.createElementNS(ns, "text");
  scale.setAttribute("x", "6"); scale.setAttribute("y", "14");
  scale.textContent = `max ${top.toFixed(1)}`;
  svg.append(scale);
}

function steering(queue, paused) {
  const td = el("td", null, "steer");
  const toggle = el("button", paused ? "Resume" : "Pause");
  toggle.dataset.queue = queue;
  toggle.onclick = () => control({ queue, action: paused ? "resume" : "pause" });
  const rate = el("input");
  rate.size = 6; rate.placeholder = "jobs/s";
  const throttle = el("button", "Throttle");
  throttle.onclick = () => control({ queue, action: "throttle", rate: rate.value || "off" });
  td.append(toggle, rate, throttle);
  return td;
}

async function control(body) {
  try { await api("/api/control", body); say(`${body.action} ${body.queue}: sent`, false); await refresh(); }
  catch (e) { say(e.message); }
}

function draw(view) {
  readOnly = view.read_only;
  document.getElementById("mode").hidden = !readOnly;
  for (const node of document.querySelectorAll(".steer")) node.hidden = readOnly;
  const health = document.getElementById("health");
  health.textContent = view.attention.length ? `${view.attention.length} need attention` : "all well";
  health.className = "pill" + (view.attention.length ? " bad" : "");
  document.getElementById("updated").textContent = "updated " + new Date(view.at * 1000).toLocaleTimeString();
  document.getElementById("attention").replaceChildren(
    ...(view.attention.length ? view.attention.map(a => el("li", a)) : [el("li", "nothing")]));

  fill("queues", view.queues.map(q => {
    const steer = view.steering[q.name];
    const state = steer.paused ? "paused" : steer.rate ? `throttled ${steer.rate}/s` : "flowing";
    const cells = [el("td", q.name), num(q.depth.queued), num(q.depth.scheduled), num(q.depth.leases),
      num(q.depth.dead), num(q.ended.done), num(q.ended.retried), num(q.ended.cancelled),
      el("td", state, "relaying")];
    if (!readOnly) cells.push(steering(q.name, steer.paused));
    return row(cells);
  }));
  fill("hops", view.hops.map(h => row([el("td", h.queue), num(h.totals.sent), num(h.totals.relayed),
    num(h.totals.direct), num(h.totals.ended),
    el("td", h.unchecked ? `not compared: ${h.unchecked}`
      : h.missing.length ? `${h.missing.reduce((n, m) => n + m[1], 0)} missing` : "agree",
      h.missing.length ? "missing" : "")])));
  const select = document.getElementById("search-queue");
  if (select.options.length !== view.queues.length) {
    select.replaceChildren(...view.queues.map(q => { const o = el("option", q.name); o.value = q.name; return o; }));
  }

  plot("throughput", view.series.rates, p => p[1]);
  plot("latency", view.series.rates, p => p[4] === null ? null : p[4] * 1000);
  if (view.series.error) say(view.series.error);

  const relays = document.getElementById("relays");
  relays.replaceChildren(...(view.relays.length ? view.relays.map(r => {
    const guards = [r.memory_guarded ? "memory guard ON" : "memory guard off",
      r.depth_guarded ? `depth guard on ${r.depth_guarded} queues` : "depth guard off"];
    return el("div", `${r.id}: ${r.partitions.length} partitions, ${r.relayed} relayed, ${guards.join(", ")}`);
  }) : [el("div", "no relay reporting", "missing")]));
  fill("partitions", view.relays.flatMap(r => r.partitions.map(p =>
    row([el("td", p.topic), num(p.partition), num(p.lag), num(p.relayed_to)]))));

  fill("canaries", view.canaries.flatMap(c => {
    const rows = Object.entries(c.arrived).map(([partition, a]) => {
      const ms = (from, to) => (from && to ? ((to - from) * 1000).toFixed(0) + " ms" : "-");
      const missing = c.missing.includes(Number(partition));
      return row([el("td", c.queue), num(partition), num(ms(a.sent_at, a.kafka_at)),
        num(ms(a.kafka_at, a.relayed_at)), num(ms(a.relayed_at, a.started_at)),
        el("td", missing ? "MISSING" : ((view.at - a.started_at).toFixed(0) + " s ago"), missing ? "num missing" : "num")]);
    });
    return rows;
  }));
}

async function refresh() {
  try { draw(await api("/api/overview")); }
  catch (e) { say(e.message); }
}

async function search(event) {
  if (event) event.preventDefault();
  const query = new URLSearchParams({
    queue: document.getElementById("search-queue").value,
    state: document.getElementById("search-state").value,
    type: document.getElementById("search-type").value,
    error: document.getElementById("search-error").value,
  });
  try {
    const found = await api("/api/jobs?" + query);
    document.getElementById("matched").textContent = `${found.matched} matched`;
    fill("jobs", found.jobs.map(j => {
      const box = el("input"); box.type = "checkbox"; box.value = j.id; box.className = "pick";
      const cell = el("td"); cell.append(box);
      const link = el("a", j.id); link.href = "#"; link.onclick = e => { e.preventDefault(); show(j.id); };
      const idCell = el("td"); idCell.append(link);
      const died = j.dead_at ? new Date(j.dead_at * 1000).toLocaleTimeString() : "";
      return row([cell, idCell, el("td", j.type), num(j.attempts), el("td", died), el("td", j.error || "", "err")]);
    }));
  } catch (e) { say(e.message); }
}

async function act(path, verb) {
  const ids = [...document.querySelectorAll("input.pick:checked")].map(b => b.value);
  if (!ids.length) { say("select jobs first"); return; }
  try {
    const done = await api(path, { queue: document.getElementById("search-queue").value, ids });
    say(verb === "replayed"
      ? `${done.moved} back in the queue` + (done.kept ? `, ${done.kept} left dead (their dedup key is taken)` : "")
      : `${done.deleted} deleted`, false);
    await search();
    await refresh();
  } catch (e) { say(e.message); }
}

async function show(id) {
  document.getElementById("job-id").value = id;
  const title = document.getElementById("job-title");
  title.hidden = false;
  title.textContent = "Job " + id;
  try {
    const job = await api("/api/job?" + new URLSearchParams({ id }));
    const where = job.kafka ? `, Kafka partition ${job.kafka[0]} offset ${job.kafka[1]}` : "";
    document.getElementById("job-state").textContent =
      `${job.state}: ${job.job_type} in ${job.queue}, ${job.attempts} attempts${where}` +
      (job.error ? ` - last error ${job.error.type}: ${job.error.message}` : "");
    document.getElementById("job-state").dataset.state = job.state;
    document.getElementById("timeline").replaceChildren(...job.timeline.map(([stage, at]) =>
      el("li", `${new Date(at * 1000).toISOString()} ${stage}`)));
  } catch (e) {
    document.getElementById("job-state").textContent = e.message;
    document.getElementById("job-state").dataset.state = "unknown";
    document.getElementById("timeline").replaceChildren();
  }
}

document.getElementById("find").onsubmit = e => { e.preventDefault(); show(document.getElementById("job-id").value.trim()); };
document.getElementById("search").onsubmit = search;
document.getElementById("replay").onclick = () => act("/api/dead/replay", "replayed");
document.getElementById("delete").onclick = () => act("/api/dead/delete", "deleted");
document.getElementById("all").onchange = e => {
  for (const box of document.querySelectorAll("input.pick")) box.checked = e.target.checked;
};
refresh();
setInterval(refresh, 2000);
