// Status page: polls /api/status every second (no reload) and fills in the shell.
// Every number element also carries the raw API value in data-value (tests compare them).
"use strict";
(function () {
  var T = JSON.parse(document.getElementById("labels").textContent);
  var body = document.body;
  var lang = body.dataset.lang;
  var refreshMs = parseInt(body.dataset.refreshMs, 10) || 1000;
  var STALE_MS = 5000;
  var lastOk = 0, lastData = null, updates = 0;
  var $ = function (id) { return document.getElementById(id); };
  var nf = new Intl.NumberFormat("en-US");

  function fmtInt(v) { return v === null || v === undefined ? "-" : nf.format(v); }
  function fmt1(v) { return v === null || v === undefined ? "-" : v.toFixed(1); }
  function fmtAge(s) {
    if (s === null || s === undefined) return "-";
    var sec = lang === "ko" ? "초" : " s", min = lang === "ko" ? "분 " : " min ", hr = lang === "ko" ? "시간 " : " h ";
    if (s < 60) return s.toFixed(1) + sec;
    if (s < 3600) return Math.floor(s / 60) + min + Math.floor(s % 60) + sec;
    return Math.floor(s / 3600) + hr + Math.floor((s % 3600) / 60) + (lang === "ko" ? "분" : " min");
  }
  // Shared with tags.js (loaded after this file on the same page): one age format.
  window.tagpipe = { fmtAge: fmtAge };
  function setNum(id, raw, text) {
    var el = $(id);
    el.dataset.value = raw === null || raw === undefined ? "" : String(raw);
    el.textContent = text;
  }
  function setState(id, text, cls) {
    var el = $(id);
    el.textContent = text;
    el.className = "state " + cls;
  }
  // Local time as YYYY-MM-DD HH:MM:SS in every language: short, unambiguous, 24 h.
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function hms(d) { return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()); }
  function ymd(d) { return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()); }
  function localTime(us) { return hms(new Date(us / 1000)); }

  // --- gauge: semicircle 0..100 %, NiFi's bands green < 60, yellow < 85, red above ---
  var CX = 110, CY = 118, R = 84;
  function pt(p, r) { var a = Math.PI * (1 - p / 100); return [CX + r * Math.cos(a), CY - r * Math.sin(a)]; }
  function arc(p0, p1, r) {
    r = r || R;
    var a = pt(p0, r), b = pt(Math.max(p1, p0 + 0.01), r);
    return "M" + a[0].toFixed(2) + " " + a[1].toFixed(2) + " A" + r + " " + r + " 0 0 1 " + b[0].toFixed(2) + " " + b[1].toFixed(2);
  }
  function bandColour(p) { return p < 60 ? "var(--ok)" : p < 85 ? "var(--warn)" : "var(--bad)"; }
  (function drawBands() {
    var g = $("gauge-bands"), ns = "http://www.w3.org/2000/svg";
    $("gauge-track").setAttribute("d", arc(0, 100));
    [[0, 60], [60, 85], [85, 100]].forEach(function (b) {
      var p = document.createElementNS(ns, "path");
      p.setAttribute("d", arc(b[0], b[1], R + 15)); p.setAttribute("class", "band"); p.style.stroke = bandColour(b[0]);
      g.appendChild(p);
    });
  })();
  function drawGauge(pct, alertPct) {
    var p = Math.min(100, Math.max(0, pct));
    var v = $("gauge-value");
    v.setAttribute("d", p > 0 ? arc(0, p) : "");
    v.style.stroke = bandColour(p);
    var ri = R - 28;
    var a = Math.PI * (1 - p / 100);
    $("gauge-needle").setAttribute("x2", (CX + ri * Math.cos(a)).toFixed(2));
    $("gauge-needle").setAttribute("y2", (CY - ri * Math.sin(a)).toFixed(2));
    var aa = Math.PI * (1 - alertPct / 100), l = $("gauge-alert");
    l.setAttribute("x1", (CX + (R - 12) * Math.cos(aa)).toFixed(2)); l.setAttribute("y1", (CY - (R - 12) * Math.sin(aa)).toFixed(2));
    l.setAttribute("x2", (CX + (R + 20) * Math.cos(aa)).toFixed(2)); l.setAttribute("y2", (CY - (R + 20) * Math.sin(aa)).toFixed(2));
    $("v-util").style.color = bandColour(p);
  }

  // --- chart: in/out rates (left axis) and lag (right axis) over the history window ---
  function niceMax(v) { if (!(v > 0)) return 1; var e = Math.pow(10, Math.floor(Math.log10(v))); var m = v / e; return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * e; }
  function drawChart(hist, nowUs, windowS) {
    var c = $("chart"), dpr = window.devicePixelRatio || 1;
    var w = c.clientWidth, h = 260;
    c.width = w * dpr; c.height = h * dpr;
    var g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    var L = 90, Rm = 80, Tm = 10, B = 36, pw = w - L - Rm, ph = h - Tm - B;
    var rMax = 0, lMax = 0;
    hist.forEach(function (p) { rMax = Math.max(rMax, p.in_per_s || 0, p.out_per_s || 0); lMax = Math.max(lMax, p.lag_s || 0); });
    rMax = niceMax(rMax); lMax = niceMax(lMax);
    var t0 = nowUs - windowS * 1e6;
    function X(t) { return L + pw * (t - t0) / (windowS * 1e6); }
    g.font = "16px system-ui, sans-serif"; g.fillStyle = "#8a99a8"; g.strokeStyle = "#263140"; g.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var y = Tm + ph * i / 4;
      g.beginPath(); g.moveTo(L, y); g.lineTo(L + pw, y); g.stroke();
      g.textAlign = "right"; g.fillText(nf.format(Math.round(rMax * (1 - i / 4))), L - 8, y + 5);
      g.textAlign = "left"; g.fillText(fmt1(lMax * (1 - i / 4)) + (lang === "ko" ? "초" : " s"), L + pw + 8, y + 5);
    }
    g.textAlign = "center";
    for (var m = 0; m <= windowS; m += 60) {
      var x = X(t0 + m * 1e6);
      g.fillText(m === windowS ? (lang === "ko" ? "지금" : "now") : "-" + ((windowS - m) / 60) + (lang === "ko" ? "분" : " min"), x, h - 10);
    }
    function line(key, max, colour, dash) {
      g.strokeStyle = colour; g.lineWidth = 3; g.setLineDash(dash || []); g.beginPath();
      var pen = false;
      hist.forEach(function (p) {
        var v = p[key];
        if (v === null || v === undefined || p.t_us < t0) { pen = false; return; }
        var x = X(p.t_us), y = Tm + ph * (1 - Math.min(v, max) / max);
        if (pen) g.lineTo(x, y); else g.moveTo(x, y);
        pen = true;
      });
      g.stroke(); g.setLineDash([]);
    }
    var cs = getComputedStyle(document.documentElement);
    line("in_per_s", rMax, cs.getPropertyValue("--info").trim());
    line("out_per_s", rMax, cs.getPropertyValue("--ok").trim());
    line("lag_s", lMax, cs.getPropertyValue("--lagc").trim(), [8, 6]);
  }

  function roleText(r) {
    if (!r) return [T["role.down"], "bad"];
    if (r.running) return [T["role." + r.state] || r.state, r.state === "running" ? "ok" : "warn"];
    return [r.state === "stopped" ? T["role.stopped"] : T["role.down"], "bad"];
  }

  function render(d) {
    var f = d.figures, h = d.health;
    body.dataset.status = h.status;
    body.dataset.takenUs = String(d.taken_us);
    var pill = $("health");
    pill.textContent = T["health." + h.status];
    pill.className = "pill " + h.status;
    var codes = h.checks.map(function (c) { return c.code; });
    var down = codes.filter(function (c) { return c === "ring_missing" || c === "writer_down" || c === "poller_down"; });
    var box = $("reasons-box"), ul = $("reasons");
    ul.textContent = "";
    h.checks.forEach(function (c) {
      var li = document.createElement("li");
      li.className = c.severity; li.dataset.code = c.code; li.title = c.message;
      li.textContent = T["check." + c.code] || c.message;
      ul.appendChild(li);
    });
    box.hidden = h.checks.length === 0;
    body.dataset.down = down.length ? "1" : "0";
    if (!f) {
      ["v-util", "v-used", "v-max", "v-oldest", "v-pending", "v-backups", "v-backup-rows", "v-replayed", "v-quarantined", "v-lost", "v-overflow", "v-throughput", "v-success"].forEach(function (id) { setNum(id, null, "-"); });
      ["v-backups", "v-quarantined", "v-lost"].forEach(function (id) { $(id).parentNode.className = "tile"; });
      $("v-util").style.color = ""; $("v-oldest").style.color = "";
      setState("v-poller", T["role.down"], "bad"); setState("v-writer", T["role.down"], "bad"); setState("v-db", T["db.unknown"], "warn");
      $("v-sink").textContent = "-";
      drawGauge(0, d.thresholds.alert_pct);
      $("v-util").style.color = "";
      renderPlcs([], d.taken_us);
      drawChart(d.history, d.taken_us, 300);
      return;
    }
    var b = f.buffer, ws = f.writer_state, wm = f.writer_metrics, lag = f.lag;
    setNum("v-util", b.utilization_pct, fmt1(b.utilization_pct));
    setNum("v-used", b.current_size, fmtInt(b.current_size));
    setNum("v-max", b.max_size, fmtInt(b.max_size));
    drawGauge(b.utilization_pct, d.thresholds.alert_pct);
    var pr = roleText(f.roles.poller), wr = roleText(f.roles.writer);
    setState("v-poller", pr[0], pr[1]); setState("v-writer", wr[0], wr[1]);
    var dbc = { up: "ok", replaying: "warn", probing: "warn", down: "bad", unknown: "warn", connecting: "warn", not_answering: "bad", login_refused: "bad" }[ws.db_state] || "warn";
    setState("v-db", T["db." + ws.db_state] || ws.db_state, dbc);
    $("v-sink").textContent = ws.sink;
    var age = lag.oldest_unwritten_age_s;
    setNum("v-oldest", age, fmtAge(age === null ? 0 : age));  // null: nothing waiting
    $("v-oldest").style.color = age === null ? "var(--ok)" : age > d.thresholds.max_lag_s ? "var(--bad)" : age > d.thresholds.max_lag_s / 2 ? "var(--warn)" : "";
    setNum("v-pending", lag.records, fmtInt(lag.records));
    setNum("v-backups", ws.backup_files_pending, fmtInt(ws.backup_files_pending));
    setNum("v-backup-rows", ws.backup_rows_pending, fmtInt(ws.backup_rows_pending));
    setNum("v-replayed", ws.rows_replayed, fmtInt(ws.rows_replayed));
    setNum("v-quarantined", ws.rows_quarantined, fmtInt(ws.rows_quarantined));
    setNum("v-lost", b.lost, fmtInt(b.lost));
    setNum("v-overflow", b.overflow_rate_pct, b.overflow_rate_pct.toFixed(2));
    setNum("v-throughput", wm.throughput_items_per_sec, fmtInt(Math.round(wm.throughput_items_per_sec)));
    setNum("v-success", wm.success_rate_pct, wm.success_rate_pct.toFixed(1));
    $("v-lost").parentNode.className = "tile" + (b.lost ? " bad" : "");
    $("v-quarantined").parentNode.className = "tile" + (ws.rows_quarantined ? " warn" : "");
    $("v-backups").parentNode.className = "tile" + (ws.backup_files_pending ? " warn" : "");
    renderPlcs(f.plcs, d.taken_us);
    drawChart(d.history, d.taken_us, 300);
  }

  function renderPlcs(plcs, nowUs) {
    var tb = $("plcs").tBodies[0];
    tb.textContent = "";
    if (!plcs.length) {
      var tr0 = tb.insertRow(); tr0.className = "empty";
      var td0 = tr0.insertCell(); td0.colSpan = 6; td0.textContent = T.no_plcs;
      return;
    }
    plcs.forEach(function (p) {
      var tr = tb.insertRow();
      tr.dataset.plc = p.plc_code;
      tr.insertCell().textContent = p.plc_code;
      var c = tr.insertCell(); c.textContent = p.connected ? T.yes : T.no; c.className = p.connected ? "ok" : "bad"; c.dataset.value = p.connected ? "1" : "0";
      var g = tr.insertCell();
      g.dataset.value = p.last_good_poll_us === null ? "" : String(p.last_good_poll_us);
      g.textContent = p.last_good_poll_us ? localTime(p.last_good_poll_us) + " (" + fmtAge(p.last_good_poll_age_s) + (lang === "ko" ? " 전)" : " ago)") : T.never;
      var n = tr.insertCell(); n.textContent = fmtInt(p.polls); n.dataset.value = String(p.polls);
      var e = tr.insertCell(); e.textContent = fmtInt(p.errors); e.dataset.value = String(p.errors); if (p.errors) e.className = "bad";
      var ce = tr.insertCell(); ce.textContent = fmtInt(p.consecutive_errors); ce.dataset.value = String(p.consecutive_errors); if (p.consecutive_errors) ce.className = "bad";
    });
  }

  function banner() {
    var el = $("banner"), txt = $("banner-text");
    var silentMs = lastOk ? Date.now() - lastOk : Infinity;
    if (silentMs > STALE_MS) {
      el.hidden = false; el.className = "banner stale"; body.classList.add("stale");
      txt.textContent = T.stale.replace("{s}", lastOk ? Math.round(silentMs / 1000) : "?");
      body.dataset.banner = "stale";
      return;
    }
    body.classList.remove("stale");
    if (lastData && body.dataset.down === "1") {
      var why = lastData.health.checks.filter(function (c) { return c.severity === "unhealthy"; })
        .map(function (c) { return T["check." + c.code] || c.message; });
      el.hidden = false; el.className = "banner down";
      txt.textContent = T.down + " \u2014 " + why.join(" \u00b7 ");
      body.dataset.banner = "down";
      return;
    }
    el.hidden = true; body.dataset.banner = "";
  }

  function tick() {
    var now = new Date();
    $("clock").textContent = ymd(now) + " " + hms(now);
    banner();
  }

  function poll() {
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, 3000);
    fetch("/api/status?seconds=300", { cache: "no-store", signal: ctl.signal })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (d) {
        lastOk = Date.now(); lastData = d; updates += 1;
        render(d);
        body.dataset.updates = String(updates);
        $("updated").textContent = hms(new Date());
      })
      .catch(function () { /* the banner turns STALE after STALE_MS without an answer */ })
      .then(function () { clearTimeout(timer); banner(); setTimeout(poll, refreshMs); });
  }

  // --- gap ledger: /api/gaps (newest first) every 5 s; a table of the last 24 hours ---
  function fullTime(us) { var d = new Date(us / 1000); return ymd(d) + " " + hms(d); }
  function renderGaps(gaps) {
    var tb = $("gaps").tBodies[0];
    tb.textContent = "";
    if (!gaps.length) {
      var tr0 = tb.insertRow(); tr0.className = "empty";
      var td0 = tr0.insertCell(); td0.colSpan = 6; td0.textContent = T.no_gaps;
      return;
    }
    gaps.forEach(function (g) {
      var tr = tb.insertRow();
      tr.dataset.kind = g.kind; tr.dataset.firstSeq = String(g.first_seq);
      var k = tr.insertCell(); k.textContent = T["gap." + g.kind] || g.kind; k.className = "bad";
      tr.insertCell().textContent = g.plc_code === "*" ? (lang === "ko" ? "전체" : "all") : g.plc_code;
      var a = tr.insertCell(); a.textContent = fullTime(g.start_us); a.dataset.value = String(g.start_us);
      var b = tr.insertCell(); b.textContent = fullTime(g.end_us); b.dataset.value = String(g.end_us);
      tr.insertCell().textContent = g.count ? fmtInt(g.count) : "-";
      tr.insertCell().textContent = g.detail || "";
    });
  }
  function pollGaps() {
    fetch("/api/gaps?limit=50", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (d) {
        renderGaps(d.gaps); body.dataset.gaps = String(d.total);
        // Oracle sink: the list is the ring's recent gaps, not the whole ledger; say so.
        var note = $("gaps-note"); note.hidden = d.source !== "ring"; note.title = d.history || "";
      })
      .catch(function () { /* a locked file (503): the table keeps its last content */ })
      .then(function () { setTimeout(pollGaps, 5000); });
  }

  setInterval(tick, 500);
  tick();
  poll();
  pollGaps();
})();
