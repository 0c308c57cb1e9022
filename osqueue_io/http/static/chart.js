// The queues page's live view: polls /api/overview every 2 s, updates the depth
// table, and draws requests and commits per second (differences of the broker's
// cumulative counters) as two polylines in the SVG. No library, no build step.
(function () {
  "use strict";
  var WIDTH = 600, HEIGHT = 160, POINTS = 90, PERIOD_MS = 2000;
  var samples = [];
  var last = null;
  var peak = 0;

  function text(id, value) {
    var node = document.getElementById(id);
    if (node) { node.textContent = value; }
  }

  function age(seconds) {
    if (seconds === null) { return ""; }
    var s = Math.floor(seconds), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    var m = Math.floor(s % 3600 / 60);
    if (d) { return d + "d " + h + "h"; }
    if (h) { return h + "h " + m + "m"; }
    if (m) { return m + "m " + (s % 60) + "s"; }
    return (s % 60) + "s";
  }

  function updateTable(overview) {
    var totals = { ready: 0, delayed: 0, claimed: 0, dead: 0 };
    overview.queues.forEach(function (q) {
      Object.keys(totals).forEach(function (k) { totals[k] += q[k]; });
      var row = document.querySelector('tr[data-queue="' + CSS.escape(q.queue) + '"]');
      if (!row) { return; }
      ["ready", "delayed", "claimed"].forEach(function (field) {
        var cell = row.querySelector('[data-field="' + field + '"]');
        if (cell) { cell.textContent = String(q[field]); }
      });
      var oldest = row.querySelector('[data-field="oldest"]');
      if (oldest) { oldest.textContent = age(q.oldest_ready_age); }
    });
    Object.keys(totals).forEach(function (k) { text("total-" + k, String(totals[k])); });
    text("total-archive", String(overview.pending_archive));
  }

  function line(id, values, top) {
    if (values.length === 1) { values = [values[0], values[0]]; }  // one sample: a dash
    var step = WIDTH / (POINTS - 1);
    var offset = POINTS - values.length;
    var points = values.map(function (v, i) {
      var y = HEIGHT - 4 - (top > 0 ? v / top : 0) * (HEIGHT - 12);
      return ((offset + i) * step).toFixed(1) + "," + y.toFixed(1);
    });
    document.getElementById(id).setAttribute("points", points.join(" "));
  }

  function draw() {
    var ops = samples.map(function (s) { return s.ops; });
    var commits = samples.map(function (s) { return s.commits; });
    var top = Math.max.apply(null, ops.concat(commits, [1]));
    line("ops-line", ops, top);
    line("commits-line", commits, top);
  }

  function poll() {
    fetch("/api/overview", { cache: "no-store", credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (overview) {
        if (!overview) { return; }
        updateTable(overview);
        if (last !== null && overview.time > last.time) {
          var seconds = overview.time - last.time;
          var ops = Math.max(0, overview.operations - last.operations) / seconds;
          var commits = Math.max(0, overview.commits - last.commits) / seconds;
          samples.push({ ops: ops, commits: commits });
          if (samples.length > POINTS) { samples.shift(); }
          peak = Math.max(peak, ops);
          text("ops-rate", ops.toFixed(1));
          text("commit-rate", commits.toFixed(1));
          text("ops-peak", peak.toFixed(1));
          draw();
        }
        last = overview;
      })
      .catch(function () { /* the broker may be restarting: try again next time */ });
  }

  poll();
  setInterval(poll, PERIOD_MS);
}());
