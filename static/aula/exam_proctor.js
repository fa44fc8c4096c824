/* The teacher's live proctor board (/ws/v1/exams/<id>/proctor/): who is in, each attempt's state, time left
 * on the server's clock, whether the student's page is connected, how far they are, and extra time.
 *
 * Every enrolled student has a row (from the page), so a student who has not started is visible too; the
 * snapshot fills in the attempts, then `attempt.status` and `attempt.connection` keep the rows current.
 * A reconnect gets a fresh snapshot, which replaces everything (the "Refresh" button does the same).
 */
(function () {
  "use strict";

  var X = window.AulaExam;
  var cfgEl = document.getElementById("proctor-config");
  var root = document.querySelector("[data-proctor]");
  if (!X || !cfgEl || !root) return;
  var cfg = JSON.parse(cfgEl.textContent);

  var PING_EVERY_MS = 30000;
  var STATES = {not_started: "Not started", in_progress: "In progress", overdue: "Time up: submit only",
                submitted: "Submitted", abandoned: "Not submitted"};
  var OPEN = {in_progress: true, overdue: true};

  function tid(name, scope) { return (scope || root).querySelector('[data-testid="' + name + '"]'); }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  var clock = new X.ServerClock();
  var students = {}, order = {};
  cfg.students.forEach(function (s, i) { students[s.id] = s.name; order[s.id] = i; });
  var attempts = {};   // attempt_id -> {attempt_id, student_id, name, state, deadline, grace_until, ...}
  var online = {};     // attempt_id -> open sockets, as far as the board can count them
  var rows = {};       // row key -> {tr, cells}
  var pings = {}, pingCount = 0, live = false;
  var tbody = tid("board-rows");
  var conn = tid("connection-state");

  function note(text) { tid("board-note").textContent = text; }

  function logUrl(attemptId) { return cfg.log_url.replace(/\/0\/log\.json$/, "/" + attemptId + "/log.json"); }

  // --- rows --------------------------------------------------------------------------------------------
  function rowFor(key, studentId, attemptId) {
    var row = rows[key];
    if (row) return row;
    var tr = el("tr");
    tr.setAttribute("data-testid", "board-row");
    tr.dataset.studentId = String(studentId);
    if (attemptId) tr.dataset.attemptId = String(attemptId);
    var cells = {};
    ["name", "state", "left", "conn", "answered", "extra", "log"].forEach(function (name) {
      var cell = el(name === "name" ? "th" : "td");
      if (name === "name") cell.scope = "row";
      if (name === "left" || name === "answered") cell.className = "num";
      cell.setAttribute("data-testid", "row-" + name);
      cells[name] = cell;
      tr.appendChild(cell);
    });
    cells.name.textContent = students[studentId] || ("Student " + studentId);
    if (attemptId) {
      var a = el("a", null, "log.json");
      a.href = logUrl(attemptId);
      a.setAttribute("download", "");
      cells.log.appendChild(a);
      cells.extra.appendChild(extraTimeForm(attemptId));
    }
    row = rows[key] = {tr: tr, cells: cells, studentId: studentId, attemptId: attemptId};
    return row;
  }

  function extraTimeForm(attemptId) {
    var form = el("form", "extra-time");
    var id = "extra-" + attemptId;
    var label = el("label", "sr-only", "Extra minutes");
    label.htmlFor = id;
    var input = el("input");
    input.type = "number";
    input.min = "1";
    input.max = "600";
    input.value = "5";
    input.id = id;
    input.setAttribute("data-testid", "extra-minutes");
    var button = el("button", "small secondary", "Add");
    button.type = "submit";
    button.setAttribute("data-testid", "extra-time");
    form.appendChild(label);
    form.appendChild(input);
    form.appendChild(button);
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var minutes = parseInt(input.value, 10);
      if (!(minutes >= 1 && minutes <= 600)) {
        note("Extra time is between 1 and 600 minutes.");
        return;
      }
      if (!sock.send({type: "extra_time", ref: "x" + attemptId + "." + minutes, attempt_id: attemptId,
                      minutes: minutes})) {
        note("Not connected: try again in a moment.");
      }
    });
    return form;
  }

  function sortKey(row) {
    var a = row.attemptId ? attempts[row.attemptId] : null;
    var pos = row.studentId in order ? order[row.studentId] : 1e9;
    return [pos, (students[row.studentId] || "").toLowerCase(), a ? a.number || a.attempt_id : 0];
  }

  function layout() {
    var wanted = {};
    Object.keys(attempts).forEach(function (id) {
      var a = attempts[id];
      wanted["a" + id] = rowFor("a" + id, a.student_id, a.attempt_id);
    });
    var withAttempt = {};
    Object.keys(attempts).forEach(function (id) { withAttempt[attempts[id].student_id] = true; });
    cfg.students.forEach(function (s) {
      if (!withAttempt[s.id]) wanted["s" + s.id] = rowFor("s" + s.id, s.id, null);
    });
    Object.keys(rows).forEach(function (key) {
      if (!wanted[key]) {
        rows[key].tr.remove();
        delete rows[key];
      }
    });
    var list = Object.keys(wanted).map(function (k) { return wanted[k]; });
    list.sort(function (x, y) {
      var a = sortKey(x), b = sortKey(y);
      for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
      return 0;
    });
    list.forEach(function (row, i) {
      if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
    });
    refresh();
  }

  function refresh() {
    var now = clock.now();
    var counts = {students: cfg.students.length, running: 0, online: 0, submitted: 0};
    Object.keys(rows).forEach(function (key) {
      var row = rows[key], c = row.cells;
      var a = row.attemptId ? attempts[row.attemptId] : null;
      var state = a ? a.state : "not_started";
      row.tr.dataset.state = state;
      c.state.textContent = STATES[state] || state;
      var left = "—";
      if (a && OPEN[state] && now !== null) {
        var end = state === "overdue" ? a.grace_until : a.deadline;
        var t = X.parseTime(end);
        if (!isNaN(t)) left = X.formatSeconds((t - now) / 1000) + (state === "overdue" ? " (grace)" : "");
      }
      c.left.textContent = left;
      var tabs = a ? (online[a.attempt_id] || 0) : 0;
      c.conn.dataset.connected = tabs > 0 ? "true" : "false";
      // A network drop reaches the server only when its keep-alive ping times out (about 40 s).
      c.conn.textContent = !a || state === "not_started" ? "—" : tabs > 0 ? "Online" : OPEN[state] ? "Offline" : "—";
      c.conn.classList.toggle("warn", tabs === 0 && !!OPEN[state]);
      c.answered.textContent = a && typeof a.answered === "number"
        ? a.answered + " / " + a.questions : "—";
      if (a && a.extra_minutes) c.state.textContent += " · +" + a.extra_minutes + " min";
      var form = c.extra.querySelector("form");
      if (form) form.hidden = !OPEN[state];
      if (OPEN[state]) counts.running += 1;
      if (tabs > 0) counts.online += 1;
      if (state === "submitted") counts.submitted += 1;
    });
    tid("board-summary").textContent = counts.students + (counts.students === 1 ? " student · " : " students · ") +
      counts.running + " in progress · " +
      counts.online + " online · " + counts.submitted + " submitted";
  }

  // --- frames ------------------------------------------------------------------------------------------
  function onSnapshot(d, received) {
    clock.sample(d.server_time, null, received);
    attempts = {};
    (d.attempts || []).forEach(function (a) {
      attempts[a.attempt_id] = {attempt_id: a.attempt_id, student_id: a.student.id, state: a.state,
                                deadline: a.deadline, answered: a.answered, questions: a.questions,
                                extra_minutes: a.extra_minutes};
      if (!(a.student.id in students)) students[a.student.id] = a.student.name;
    });
    online = {};
    Object.keys(d.online || {}).forEach(function (id) { online[id] = d.online[id]; });
    var warnings = d.warnings || [];
    var list = tid("warning-list");
    list.textContent = "";
    warnings.forEach(function (w) {
      list.appendChild(el("li", null, w.name + " needs " + w.needs_minutes + " minutes; the window has " +
                          w.window_minutes + "."));
    });
    tid("warnings").hidden = !warnings.length;
    live = true;
    conn.dataset.state = "live";
    conn.textContent = "Live";
    layout();
    ping();
  }

  function onStatus(d) {
    var a = attempts[d.attempt_id];
    if (!a) {
      a = attempts[d.attempt_id] = {attempt_id: d.attempt_id, student_id: d.student_id};
    }
    ["state", "deadline", "grace_until", "extra_minutes"].forEach(function (k) {
      if (d[k] !== undefined) a[k] = d[k];
    });
    layout();
  }

  function onConnection(d) {
    var n = online[d.attempt_id] || 0;
    online[d.attempt_id] = Math.max(0, n + (d.connected ? 1 : -1));
    refresh();
  }

  function onAck(d) {
    var m = /^x(\d+)\.(\d+)$/.exec(d.ref || "");
    if (!m) return;
    var a = attempts[m[1]];
    if (a && d.deadline) a.deadline = d.deadline;
    note("Added " + m[2] + " minutes for " + (a ? students[a.student_id] : "the student") + ".");
    refresh();
  }

  function onError(d) {
    if ((d.ref || "").charAt(0) === "x") note("Extra time not granted: " + (d.message || d.code));
  }

  function ping() {
    if (!live) return;
    pingCount += 1;
    var ref = "p" + pingCount;
    pings[ref] = performance.now();
    sock.send({type: "ping", ref: ref});
  }

  function onFrame(f, received) {
    var d = f.data || {};
    switch (f.type) {
      case "snapshot": onSnapshot(d, received); break;
      case "attempt.status": onStatus(d); break;
      case "attempt.connection": onConnection(d); break;
      case "ack": onAck(d); break;
      case "error": onError(d); break;
      case "pong":
        if (pings[d.ref] !== undefined) {
          clock.sample(d.server_time, pings[d.ref], received);
          delete pings[d.ref];
        }
        break;
    }
  }

  function onState(name, detail) {
    live = false;
    pings = {};
    conn.dataset.state = name;
    conn.textContent = name === "closed"
      ? (detail.reason === "signed-out" ? "Signed out: sign in again." : "Disconnected.")
      : "Reconnecting…";
  }

  var refreshButton = el("button", "small secondary", "Refresh");
  refreshButton.type = "button";
  refreshButton.setAttribute("data-testid", "board-refresh");
  refreshButton.title = "Reload the board (answered counts are not live)";
  refreshButton.addEventListener("click", function () { sock.reconnectNow(); });
  conn.parentNode.appendChild(refreshButton);

  layout();
  var sock = new X.ExamSocket(cfg.ws_path, {onFrame: onFrame, onState: onState});
  setInterval(function () {
    if (clock.jumped()) { clock.invalidate(); ping(); }
    refresh();
  }, 1000);
  setInterval(ping, PING_EVERY_MS);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { clock.invalidate(); ping(); }
  });
})();
