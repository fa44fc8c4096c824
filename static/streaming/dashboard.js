/* The creator dashboard: a snapshot of the last five minutes, then a `dashboard.tick` every few seconds over
 * /ws/v1/streams/<id>/dashboard/, drawn with uPlot (static/vendor/uplot). Per-second points are kept by second
 * (a tick overlaps the previous one), rates per minute are rolling 60-second sums, the mood is a rolling
 * 10-second average of VADER compound scores. Every text is set with textContent. See docs/protocol.md.
 */
(function () {
  "use strict";
  var root = document.querySelector("[data-testid=dashboard]");
  if (!root || !window.uPlot || !window.AulaSocket) return;

  var WINDOW = 300;          // seconds shown
  var MINUTE = 60;
  var MOOD_WINDOW = 10;
  var COLORS = ["#1f5fbf", "#b00020", "#137333", "#8a5300", "#6b4fa0", "#00838f", "#c2185b", "#5d4037"];
  var streamId = root.getAttribute("data-stream-id");
  var points = {};           // second -> point
  var viewers = [];          // [[second, count]]
  var charts = {};
  var reactionKinds = [];
  var updates = 0;

  function tid(name) { return root.querySelector("[data-testid=" + name + "]"); }
  function setText(name, value) { var el = tid(name); if (el) el.textContent = value; }

  function chartWidth(el) { return Math.max(240, Math.floor(el.clientWidth || el.parentNode.clientWidth || 320)); }

  function makeChart(name, series, yRange) {
    var el = root.querySelector("[data-chart=" + name + "]");
    if (charts[name]) { charts[name].destroy(); }
    var opts = {
      width: chartWidth(el), height: 200,
      scales: {x: {time: true}, y: yRange ? {range: yRange} : {}},
      series: [{}].concat(series.map(function (s, i) {
        return {label: s, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: name === "sentiment"};
      })),
      axes: [{}, {size: 44}],
      legend: {live: false}
    };
    var data = [[]].concat(series.map(function () { return []; }));
    charts[name] = new window.uPlot(opts, data, el);
    return charts[name];
  }

  function setChart(name, data) {
    var chart = charts[name];
    chart.setData(data);
    var el = root.querySelector("[data-chart=" + name + "]");
    // For people and tests: how many points are drawn and each series' latest value.
    var last = data.slice(1).map(function (ys) {
      var v = ys.length ? ys[ys.length - 1] : null;
      return v === null || v === undefined ? "" : String(v);
    });
    el.setAttribute("data-points", String(data[0].length));
    el.setAttribute("data-last", last.join(","));
    el.setAttribute("data-updates", String(updates));
  }

  function seconds() {
    var keys = Object.keys(points).map(Number).sort(function (a, b) { return a - b; });
    if (keys.length > WINDOW) {
      keys.slice(0, keys.length - WINDOW).forEach(function (k) { delete points[k]; });
      keys = keys.slice(keys.length - WINDOW);
    }
    return keys;
  }

  function rolling(keys, field, span) {
    var out = [], sum = 0;
    for (var i = 0; i < keys.length; i++) {
      sum += points[keys[i]][field];
      if (i >= span) sum -= points[keys[i - span]][field];
      out.push(sum);
    }
    return out;
  }

  function draw() {
    updates += 1;
    var keys = seconds();
    // Viewers: one sample per tick.
    var cutoff = keys.length ? keys[0] : 0;
    viewers = viewers.filter(function (v) { return v[0] >= cutoff; });
    setChart("viewers", [viewers.map(function (v) { return v[0]; }), viewers.map(function (v) { return v[1]; })]);
    // Joins, leaves, chat: per minute, rolling.
    setChart("activity", [keys, rolling(keys, "join", MINUTE), rolling(keys, "leave", MINUTE),
                          rolling(keys, "chat", MINUTE)]);
    // Reactions per second, one series per kind seen in the window.
    var kinds = {};
    keys.forEach(function (k) { Object.keys(points[k].rx || {}).forEach(function (e) { kinds[e] = true; }); });
    var kindList = Object.keys(kinds).sort();
    if (kindList.join("\u0000") !== reactionKinds.join("\u0000")) {
      reactionKinds = kindList;
      makeChart("reactions", reactionKinds.length ? reactionKinds : ["reactions"]);
    }
    var rx = [keys];
    (reactionKinds.length ? reactionKinds : [null]).forEach(function (kind) {
      rx.push(keys.map(function (k) { return kind === null ? 0 : (points[k].rx[kind] || 0); }));
    });
    setChart("reactions", rx);
    tid("reactions-empty").hidden = reactionKinds.length > 0;
    // Mood: rolling 10-second average; no messages, no figure.
    var sums = rolling(keys, "sentiment_sum", MOOD_WINDOW), counts = rolling(keys, "sentiment_n", MOOD_WINDOW);
    setChart("sentiment", [keys, sums.map(function (s, i) { return counts[i] ? Math.round(s / counts[i] * 1000) / 1000 : null; })]);
  }

  function showSummary(data) {
    var g = data.gauges || {}, s = data.summary || {};
    setText("stat-viewers", String(g.viewers !== undefined ? g.viewers : "–"));
    setText("stat-peak", String(g.peak !== undefined ? g.peak : "–"));
    setText("stat-held", String(g.held !== undefined ? g.held : "–"));
    setText("stat-joins", String(s.joins_per_minute !== undefined ? s.joins_per_minute : "–"));
    setText("stat-leaves", String(s.leaves_per_minute !== undefined ? s.leaves_per_minute : "–"));
    setText("stat-chat", String(s.chat_per_minute !== undefined ? s.chat_per_minute : "–"));
    setText("stat-sentiment", s.sentiment === null || s.sentiment === undefined ? "–" :
      (s.sentiment > 0 ? "+" : "") + Number(s.sentiment).toFixed(2));
    showHealth(data.health);
  }

  // Whatever keys the health object has, as a small table (values that are objects are shown as JSON).
  function showHealth(health) {
    var table = tid("health-table"), body = table.querySelector("tbody");
    var keys = health && typeof health === "object" ? Object.keys(health).sort() : [];
    tid("health-empty").hidden = keys.length > 0;
    table.hidden = keys.length === 0;
    while (body.firstChild) body.removeChild(body.firstChild);
    keys.forEach(function (key) {
      var tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
      var value = health[key];
      th.textContent = key.replace(/_/g, " ");
      td.textContent = value !== null && typeof value === "object" ? JSON.stringify(value) : String(value);
      tr.setAttribute("data-key", key);
      tr.appendChild(th); tr.appendChild(td); body.appendChild(tr);
    });
  }

  function addPoints(list) {
    (list || []).forEach(function (p) { points[p.t] = p; });
  }

  makeChart("viewers", ["viewers"]);
  makeChart("activity", ["joins/min", "leaves/min", "chat/min"]);
  makeChart("reactions", ["reactions"]);
  makeChart("sentiment", ["mood"], [-1, 1]);

  var state = root.querySelector("[data-testid=connection-state]");
  var LABELS = {connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", closed: "Disconnected"};
  new window.AulaSocket("/ws/v1/streams/" + encodeURIComponent(streamId) + "/dashboard/", {
    onState: function (s, detail) {
      state.setAttribute("data-state", s);
      state.textContent = s === "closed" && detail.reason === "forbidden" ? "No longer allowed" : (LABELS[s] || s);
    },
    onSnapshot: function (data) {
      points = {};
      addPoints(data.points);
      viewers = (data.viewers_history || []).slice();
      showSummary(data);
      draw();
    },
    onEvent: function (frame) {
      if (frame.type !== "dashboard.tick") return;  // the staff room carries other staff events too
      var data = frame.data || {};
      addPoints(data.points);
      if (data.viewers) {
        viewers = viewers.filter(function (v) { return v[0] !== data.viewers[0]; });
        viewers.push(data.viewers);
      }
      showSummary(data);
      draw();
    }
  });

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      Object.keys(charts).forEach(function (name) {
        var el = root.querySelector("[data-chart=" + name + "]");
        charts[name].setSize({width: chartWidth(el), height: 200});
      });
    }, 150);
  });
})();
