// Live tag values (issue 15): one page of /api/tags at a time (the server filters and pages,
// so 10,000 tags cost the browser 50 rows), refreshed every second; ages tick every 250 ms
// from the server's own clock (taken_us), so a skewed browser clock does not matter.
// Every cell carries the raw API value in data-value (tests compare them).
"use strict";
(function () {
  var T = JSON.parse(document.getElementById("labels").textContent);
  var body = document.body;
  var refreshMs = parseInt(body.dataset.refreshMs, 10) || 1000;
  var PAGE = 50;
  var $ = function (id) { return document.getElementById(id); };
  var nf = new Intl.NumberFormat("en-US");
  var vf = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 7 });
  var offset = 0, last = null, receivedAt = 0, inflight = false, seq = 0, tagUpdates = 0;
  var plcsShown = "";

  var fmtAge = window.tagpipe.fmtAge;  // status.js, loaded first: the page's one age format
  function qualityClass(q) { return q === "good" ? "ok" : q === "bad" || q === "torn" ? "bad" : "warn"; }

  function url() {
    var p = ["limit=" + PAGE, "offset=" + offset];
    var q = $("tag-q").value.trim(), plc = $("tag-plc").value;
    if (q) p.push("q=" + encodeURIComponent(q.slice(0, 100)));
    if (plc) p.push("plc=" + encodeURIComponent(plc));
    if ($("tag-stale").checked) p.push("stale=true");
    return "/api/tags?" + p.join("&");
  }

  function fillPlcs(plcs) {
    var key = plcs.join("\n");
    if (key === plcsShown) return;
    var sel = $("tag-plc"), keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    plcs.forEach(function (c) { var o = document.createElement("option"); o.value = c; o.textContent = c; sel.appendChild(o); });
    sel.value = plcs.indexOf(keep) >= 0 ? keep : "";
    plcsShown = key;
  }

  // Age of a row now: the server's age when it answered plus the time since (250 ms ticks).
  function ageNow(t) {
    if (t.poll_us === null) return null;
    return (last.taken_us - t.poll_us) / 1e6 + (Date.now() - receivedAt) / 1000;
  }

  function render(d) {
    var tb = $("tags").tBodies[0];
    tb.textContent = "";
    fillPlcs(d.plcs || []);
    var m = $("tag-matched");
    m.dataset.value = d.present ? String(d.matched) : "";
    m.textContent = d.present ? nf.format(d.matched) : "-";
    $("tag-range").textContent = d.present && d.tags.length ? nf.format(d.offset + 1) + "-" + nf.format(d.offset + d.tags.length) : "0";
    $("tag-prev").disabled = offset === 0;
    $("tag-next").disabled = !d.present || offset + PAGE >= d.matched;
    if (!d.present || !d.tags.length) {
      var tr0 = tb.insertRow(); tr0.className = "empty";
      var td0 = tr0.insertCell(); td0.colSpan = 7; td0.textContent = d.present ? T.tags_nomatch : T.tags_none;
      return;
    }
    d.tags.forEach(function (t) {
      var tr = tb.insertRow();
      tr.dataset.key = t.plc_code + "/" + t.address;
      tr.className = t.stale ? "stale" : "";
      tr.insertCell().textContent = t.plc_code;
      tr.insertCell().textContent = t.address;
      var v = tr.insertCell(); v.className = "num value";
      v.dataset.value = t.value === null ? "" : String(t.value);
      v.textContent = t.value === null ? "-" : vf.format(t.value);
      if (t.unit) { var u = document.createElement("span"); u.className = "unit"; u.textContent = t.unit; v.appendChild(u); }
      var q = tr.insertCell(); q.className = "quality " + qualityClass(t.quality); q.dataset.value = t.quality;
      q.textContent = T["q." + t.quality] || t.quality.toUpperCase();
      var a = tr.insertCell(); a.className = "num age"; a.dataset.pollUs = t.poll_us === null ? "" : String(t.poll_us);
      a.dataset.value = t.age_s === null ? "" : String(t.age_s);
      a.textContent = fmtAge(t.age_s);
      var s = tr.insertCell(); s.className = "state " + (t.stale ? "warn" : "ok"); s.dataset.value = t.stale ? "1" : "0";
      s.textContent = t.stale ? T.tags_stale : T.tags_fresh;
      var ds = tr.insertCell(); ds.textContent = t.description; ds.title = t.group + " (" + t.interval_s + " s)";
    });
  }

  function tickAges() {
    if (!last || !last.present) return;
    var cells = $("tags").querySelectorAll("td.age");
    for (var i = 0; i < cells.length; i++) {
      var c = cells[i], pu = c.dataset.pollUs;
      if (!pu) continue;
      c.textContent = fmtAge(ageNow({ poll_us: parseInt(pu, 10) }));
    }
  }

  function poll(force) {
    if (inflight && !force) return;
    inflight = true;
    var mine = ++seq;
    fetch(url(), { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        if (mine !== seq) return;  // a newer request (the operator typed) answers instead
        if (d.status === 400) return;
        if (d.present && d.offset > 0 && d.offset >= d.matched) { offset = Math.max(0, d.matched - 1 - ((d.matched - 1) % PAGE)); return; }
        last = d; receivedAt = Date.now();
        render(d);
        tagUpdates += 1;
        body.dataset.tagUpdates = String(tagUpdates);
      })
      .catch(function () { /* the page's STALE banner covers a silent server */ })
      .then(function () { if (mine === seq) inflight = false; });
  }

  var typing = null;
  function refilter() { offset = 0; clearTimeout(typing); typing = setTimeout(function () { poll(true); }, 200); }
  $("tag-q").addEventListener("input", refilter);
  $("tag-plc").addEventListener("change", refilter);
  $("tag-stale").addEventListener("change", refilter);
  $("tag-prev").addEventListener("click", function () { offset = Math.max(0, offset - PAGE); poll(true); });
  $("tag-next").addEventListener("click", function () { if (last && offset + PAGE < last.matched) { offset += PAGE; poll(true); } });

  setInterval(function () { poll(false); }, refreshMs);
  setInterval(tickAges, 250);
  poll(true);
})();
