// lvsmon status page: polls /status.json and redraws. No framework, no build step.
// Layout of the document: lvsmon/statuspage/status.schema.json (docs/status-json.md).
"use strict";
(function () {
  const STATES = {  // text label + symbol: colour is never the only cue
    up: "● up", down: "▼ down", draining: "◐ draining", drained: "‖ drained", sorry: "↪ sorry",
  };
  const ROLE = { master: "▲ master", backup: "● backup", fault: "▼ fault", initialize: "○ initialize" };
  let doc = null;           // the last document received
  let lastOk = 0;           // Date.now() of the last good answer
  let failing = "";         // why the last poll failed ("" = it did not)
  let timer = 0;
  const sorts = {};         // table id -> {key, dir}

  // one formatter each: toLocaleString() builds a new one per call (slow at 4,000 rows)
  const NUM = new Intl.NumberFormat("en");
  const DATE = new Intl.DateTimeFormat("en-GB", { dateStyle: "short", timeStyle: "medium" });
  const TIME = new Intl.DateTimeFormat("en-GB", { timeStyle: "medium" });
  const $ = (id) => document.getElementById(id);
  const esc = (v) => String(v).replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const refresh = () => (doc ? doc.page.refresh_seconds : 2) * 1000;

  function rate(v) {  // connections per second, in the unit people read
    if (v === null || v === undefined) return "—";
    return v < 10 ? v.toFixed(1) : NUM.format(Math.round(v));
  }
  function mbps(v) {
    if (v === null || v === undefined) return "—";
    return (v / 1e6).toFixed(v < 1e7 ? 2 : 1);
  }
  function ago(t) {
    if (!t) return "never";
    const s = Math.max(0, Date.now() / 1000 - t);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  const clock = (t) => DATE.format(new Date(t * 1000));
  const when = (t) => t ? `<time datetime="${new Date(t * 1000).toISOString()}" title="${esc(clock(t))}">${ago(t)}</time>` : "never";
  const badge = (state) => `<span class="badge s-${esc(state)}">${esc(STATES[state] || state)}</span>`;

  function spark(history, label) {
    if (!history.length) return `<span class="muted">collecting…</span>`;
    const w = 120, h = 24, top = Math.max(...history, 0.001);
    const step = history.length > 1 ? w / (history.length - 1) : w;
    const pts = history.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - (v / top) * (h - 2)).toFixed(1)}`).join(" ");
    const now = history[history.length - 1];
    const text = `${label}: now ${rate(now)} conn/s, peak ${rate(top)} conn/s`;
    return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(text)}"><title>${esc(text)}</title><polyline points="${pts}"/></svg>`;
  }

  // --- sortable tables: columns are [key, heading, value(row) for sorting, cell(row) html] ---
  function table(id, caption, cols, rows) {
    const sort = sorts[id];
    if (sort) {
      const col = cols.find((c) => c[0] === sort.key);
      if (col) {
        rows = rows.slice().sort((a, b) => {
          const x = col[2](a), y = col[2](b);
          const r = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), "en", { numeric: true });
          return sort.dir * r;
        });
      }
    }
    const head = cols.map((c) => {
      const dir = sort && sort.key === c[0] ? (sort.dir > 0 ? "ascending" : "descending") : "none";
      return `<th scope="col" class="c-${esc(c[0])}" aria-sort="${dir}"><button type="button" class="sort" data-table="${esc(id)}" data-sort="${esc(c[0])}">${c[1]}</button></th>`;
    }).join("");
    const body = rows.map((r) => `<tr${r.rowClass ? ` class="${r.rowClass}"` : ""}>${cols.map((c) => `<td class="c-${c[0]}">${c[3](r)}</td>`).join("")}</tr>`).join("");
    return `<div class="scroll" role="region" tabindex="0" aria-label="${esc(caption)}"><table id="${esc(id)}"><caption>${esc(caption)}</caption><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`;
  }

  const vsId = (vs) => "vs-" + vs.name;
  function summary(d) {
    const cols = [
      ["name", "Name", (v) => v.name, (v) => `<a href="#${esc(vsId(v))}">${esc(v.name)}</a>${v.configured ? "" : ' <span class="badge s-draining">◐ removed, draining</span>'}`],
      ["address", "Address", (v) => v.address + ":" + v.port, (v) => esc(v.fwmark ? `fwmark ${v.fwmark}` : `${v.protocol} ${v.address.includes(":") ? "[" + v.address + "]" : v.address}:${v.port}`)],
      ["scheduler", "Sched", (v) => v.scheduler, (v) => esc(v.scheduler)],
      ["up", "Up", (v) => v.real_servers_up / Math.max(1, v.real_servers.length), (v) => {
        const n = v.real_servers.length, up = v.real_servers_up;
        return `<span class="badge s-${up === n ? "up" : up ? "draining" : "down"}">${up}/${n} up</span>`;
      }],
      ["active", "Active", (v) => v.real_servers.reduce((s, r) => s + r.active, 0), (v) => NUM.format(v.real_servers.reduce((s, r) => s + r.active, 0))],
      ["cps", "Conn/s", (v) => v.rate.connections_per_second ?? -1, (v) => rate(v.rate.connections_per_second)],
      ["mbps", "MB/s", (v) => v.rate.bytes_per_second ?? -1, (v) => mbps(v.rate.bytes_per_second)],
    ];
    return table("summary-table", "Virtual servers: state and traffic now", cols, d.virtual_servers);
  }

  function weights(r) {
    const w = r.weights || {};
    if (!w.configured) return `<span title="not in the config">${r.weight}</span>`;
    const parts = [`${esc(w.configured)}`, esc(w.health), esc(w.slow_start), esc(w.adaptive)];
    if (w.operator !== undefined) parts.push(`<strong>op ${esc(w.operator)}</strong>`);
    return `<span class="weights" title="configured × health × slow start × adaptive${w.operator !== undefined ? " × operator" : ""} = effective">${parts.join(" × ")} = <strong>${esc(w.effective)}</strong></span>`;
  }

  function failure(r) {
    const h = r.health;
    if (!h) return `<span class="muted">no check</span>`;
    const f = h.last_failure;
    if (!f) return `<span class="muted">${esc(h.check)}: no failure</span>`;
    return `${esc(h.check)}: <span class="reason">${esc(f.reason)}</span>${f.detail ? ` <span class="muted">(${esc(f.detail)})</span>` : ""}, ${when(f.at)}`;
  }

  function adminCell(vs, r, admin) {
    if (!admin.allowed || !r.weights || !r.weights.configured) return "";
    const data = `data-vs="${esc(vs.name)}" data-rs="${esc(r.real_server)}"`;
    const who = `${esc(r.real_server)} in ${esc(vs.name)}`;
    const held = r.admin ? `<span class="muted">${esc(r.admin.action)} by ${esc(r.admin.by)}${r.admin.until ? ", until " + esc(clock(r.admin.until)) : ""}</span> ` : "";
    const main = r.admin
      ? `<button type="button" data-admin="restore" ${data} aria-label="Restore ${who}">Restore</button>`
      : `<button type="button" data-admin="drain" ${data} aria-label="Drain ${who}">Drain</button>`;
    return `${held}${main} <button type="button" data-admin="pick" ${data} aria-label="Set a temporary weight on ${who}">Weight…</button>`;
  }

  function service(vs, admin) {
    const cols = [
      ["rs", "Real server", (r) => r.real_server, (r) => esc(r.real_server)],
      ["state", "State", (r) => r.state, (r) => badge(r.state)],
      ["weight", "Weight", (r) => r.weight, (r) => String(r.weight)],
      ["parts", "Config × health × slow start × adaptive = effective", (r) => Number((r.weights || {}).effective || 0), weights],
      ["active", "Active", (r) => r.active, (r) => NUM.format(r.active)],
      ["inactive", "Inactive", (r) => r.inactive, (r) => NUM.format(r.inactive)],
      ["cps", "Conn/s", (r) => r.rate.connections_per_second ?? -1, (r) => rate(r.rate.connections_per_second)],
      ["mbps", "MB/s", (r) => r.rate.bytes_per_second ?? -1, (r) => mbps(r.rate.bytes_per_second)],
      ["spark", "Recent conn/s", (r) => r.history.length ? r.history[r.history.length - 1] : -1, (r) => spark(r.history, `${r.real_server} connections per second`)],
      ["health", "Last health failure", (r) => (r.health && r.health.last_failure ? r.health.last_failure.at : 0), failure],
    ];
    if (admin.allowed) cols.push(["admin", "Admin", (r) => (r.admin ? r.admin.action : ""), (r) => adminCell(vs, r, admin)]);
    const rows = vs.real_servers.map((r) => Object.assign({ rowClass: "r-" + r.state }, r));
    const where = vs.fwmark ? `fwmark ${vs.fwmark}` : `${vs.protocol} ${vs.address}:${vs.port}`;
    return `<section class="vs" id="${esc(vsId(vs))}" aria-labelledby="${esc(vsId(vs))}-h"><h2 id="${esc(vsId(vs))}-h">${esc(vs.name)} <span class="muted">${esc(where)}, ${esc(vs.scheduler)}, ${rate(vs.rate.connections_per_second)} conn/s, ${mbps(vs.rate.bytes_per_second)} MB/s</span></h2>${table("t-" + vs.name, `Real servers of ${vs.name}`, cols, rows)}</section>`;
  }

  function failover(groups) {
    const cols = [
      ["name", "Group", (g) => g.name, (g) => esc(g.name)],
      ["state", "Role", (g) => g.state, (g) => `<span class="badge g-${esc(g.state)}">${esc(ROLE[g.state] || g.state)}</span> since ${when(g.since)}`],
      ["vrid", "VRID / interface", (g) => g.vrid, (g) => `${g.vrid} on ${esc(g.interface)}`],
      ["prio", "Priority", (g) => g.priority, (g) => `${g.priority}${g.priority !== g.configured_priority ? ` (configured ${g.configured_priority})` : ""}`],
      ["peer", "Peer", (g) => g.peer || "", (g) => g.peer ? `${esc(g.peer)} priority ${g.peer_priority}, last advert ${when(g.peer_last_advert)}` : `<span class="muted">no advert heard</span>`],
      ["master", "Master", (g) => g.master || "", (g) => esc(g.master || "—")],
    ];
    return table("failover-table", "Failover groups: role and peers", cols, groups);
  }

  // --- BGP announcements: the BGP announcer fills doc.bgp (one object per prefix);
  // until then the section stays hidden. Shown fields: prefix, state, next_hop, peers, why.
  function renderBgp(bgp) {
    const cols = [
      ["prefix", "Prefix", (b) => b.prefix || "", (b) => esc(b.prefix || "")],
      ["state", "State", (b) => b.state || "", (b) => esc(b.state || "")],
      ["next_hop", "Next hop", (b) => b.next_hop || "", (b) => esc(b.next_hop || "")],
      ["peers", "Peers", (b) => (b.peers || []).length, (b) => esc((b.peers || []).map((p) => (p.name || p.address || "") + (p.state ? " " + p.state : "")).join(", "))],
      ["why", "Why", (b) => b.why || "", (b) => esc(b.why || "")],
    ];
    return table("bgp-table", "BGP announcements", cols, bgp);
  }

  function reloads(list) {
    const cols = [
      ["at", "When", (r) => r.at, (r) => when(r.at)],
      ["ok", "Result", (r) => (r.ok ? 1 : 0), (r) => (r.ok ? `<span class="badge s-up">✔ ok</span>` : `<span class="badge s-down">✖ rejected</span>`)],
      ["trigger", "Trigger", (r) => r.trigger, (r) => esc(r.trigger)],
      ["message", "Message", (r) => r.message, (r) => esc(r.message)],
    ];
    return table("reloads-table", "Last reloads, newest first", cols, list);
  }

  function render() {
    const d = doc, admin = d.page.admin;
    $("director").textContent = `${d.version} · ${d.dataplane} · ${d.config_source}`;
    $("summary").innerHTML = summary(d);
    $("services").innerHTML = d.virtual_servers.map((vs) => service(vs, admin)).join("");
    $("failover").hidden = !d.failover_groups.length;
    if (d.failover_groups.length) $("failover-body").innerHTML = failover(d.failover_groups);
    $("bgp").hidden = !Array.isArray(d.bgp);
    if (Array.isArray(d.bgp)) $("bgp-body").innerHTML = renderBgp(d.bgp);
    $("reloads").innerHTML = reloads(d.reload.history);
    $("admin-why").textContent = admin.allowed ? `Signed in as ${admin.user}. Every action is logged and counted.` : admin.why_not;
    $("admin-form").hidden = !admin.allowed;
    document.body.dataset.rendered = String(Date.now());
  }

  function freshness() {
    const el = $("freshness");
    if (!lastOk) {
      el.textContent = failing ? `no answer from the daemon: ${failing}` : "connecting to the daemon…";
      document.body.dataset.state = failing ? "stale" : "loading";
      return;
    }
    const age = (Date.now() - lastOk) / 1000;
    const stale = failing || age * 1000 > 2 * refresh() + 1000;
    document.body.dataset.state = stale ? "stale" : "live";
    el.textContent = stale
      ? `STALE: no answer from the daemon since ${TIME.format(new Date(lastOk))} (${Math.round(age)} s ago${failing ? ": " + failing : ""}); showing the last data`
      : `live · updated every ${refresh() / 1000} s · last ${TIME.format(new Date(lastOk))}`;
  }

  async function poll() {
    clearTimeout(timer);
    const ctl = new AbortController();
    const limit = setTimeout(() => ctl.abort(), Math.max(2000, refresh()));
    try {
      const resp = await fetch("/status.json", { cache: "no-store", credentials: "same-origin", signal: ctl.signal });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const next = await resp.json();
      if (next.schema_version !== 1) throw new Error(`unknown schema_version ${next.schema_version}`);
      doc = next;
      lastOk = Date.now();
      failing = "";
      render();
    } catch (err) {
      failing = err.name === "AbortError" ? "timed out" : String(err.message || err);
    } finally {
      clearTimeout(limit);
      freshness();
      timer = setTimeout(poll, refresh());
    }
  }

  // --- admin actions ---
  function csrf() {
    const m = document.cookie.match(/(?:^|;\s*)lvsmon_csrf=([^;]+)/);
    return m ? m[1] : "";
  }
  async function act(body) {
    const msg = $("admin-message");
    msg.className = "admin-message";
    msg.textContent = `${body.action}…`;
    try {
      const resp = await fetch("/admin", {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
        body: JSON.stringify(body),
      });
      let answer = {};
      try { answer = await resp.json(); } catch (e) { answer = { message: `HTTP ${resp.status}` }; }
      msg.className = "admin-message " + (resp.ok ? "ok" : "refused");
      msg.textContent = resp.ok ? `Done: ${answer.message}` : `Refused (${answer.reason || resp.status}): ${answer.message || "HTTP " + resp.status}`;
    } catch (err) {
      msg.className = "admin-message refused";
      msg.textContent = `Not sent: ${err.message || err}`;
    }
    poll();
  }

  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button");
    if (!btn) return;
    if (btn.dataset.sort) {
      const id = btn.dataset.table, key = btn.dataset.sort, cur = sorts[id];
      sorts[id] = { key, dir: cur && cur.key === key ? -cur.dir : 1 };
      if (doc) render();
      const again = document.querySelector(`button[data-table="${CSS.escape(id)}"][data-sort="${CSS.escape(key)}"]`);
      if (again) again.focus();
      return;
    }
    const kind = btn.dataset.admin;
    if (kind === "drain" || kind === "restore") act({ action: kind, virtual_server: btn.dataset.vs, real_server: btn.dataset.rs });
    else if (kind === "reload") act({ action: "reload" });
    else if (kind === "pick") {
      $("admin-vs").value = btn.dataset.vs;
      $("admin-rs").value = btn.dataset.rs;
      $("admin-weight").focus();
    }
  });
  document.addEventListener("submit", (ev) => {
    if (ev.target.id !== "admin-form") return;
    ev.preventDefault();
    act({
      action: "weight", virtual_server: $("admin-vs").value, real_server: $("admin-rs").value,
      weight: Number($("admin-weight").value), seconds: Number($("admin-minutes").value) * 60,
    });
  });

  setInterval(freshness, 1000);
  poll();
})();
