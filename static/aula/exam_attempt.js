/* The student's attempt page: questions, autosave, the server-authoritative countdown and submission over
 * one WebSocket (/ws/v1/attempts/<id>/), with the HTTP API as a fallback when the socket stays down.
 *
 * Autosave. An edit is committed after a pause (1.5 s of typing, 0.6 s after a click, at once when a text
 * field loses focus). Committing takes the question's next version — above both the highest version this
 * device ever used (kept in localStorage, so a reload never reuses one) and the version the server holds —
 * and stores {value, version} in localStorage *before* sending it. The entry leaves localStorage only when
 * the server acknowledges that version, and only then does the question say "Saved". Entries still in
 * localStorage are sent again after a reconnect or a reload (a replay of a stored version is acknowledged
 * with applied=false and changes nothing); after a few seconds without a socket they go over HTTP.
 * When the server already holds a newer version than a queued entry (the student went on on another
 * device), the server's answer wins at the next snapshot.
 *
 * Time. The deadline comes from the server and is compared with the server clock (exam_common.js), never
 * with the client's wall clock. The clock is resynchronised with `time.sync` every minute, when the page
 * becomes visible again, and when the device seems to have slept.
 *
 * Nothing the student typed is thrown away: when the attempt closes (submitted, time up, or closed while
 * answers were still queued) the text stays on the page, read-only, and unsent answers are kept on this
 * device and listed when the page is opened again.
 */
(function () {
  "use strict";

  var X = window.AulaExam;
  var cfgEl = document.getElementById("exam-config");
  var root = document.querySelector("[data-exam]");
  if (!X || !cfgEl || !root) return;
  var cfg = JSON.parse(cfgEl.textContent);

  var TEXT_DEBOUNCE_MS = 1500;
  var CHOICE_DEBOUNCE_MS = 600;
  var FALLBACK_AFTER_MS = 4000;   // socket down this long: answers go over HTTP
  var FALLBACK_EVERY_MS = 3000;
  var SYNC_EVERY_MS = 60000;
  var SYNC_TIMEOUT_MS = 10000;    // no reply to time.sync: the socket is half-open, drop it
  var SUBMIT_WAIT_MS = 8000;      // how long Submit waits for outstanding saves
  var MAX_EVENTS = 300;
  var OPEN = {in_progress: true, overdue: true};
  var FINISHED = {submitted: true, abandoned: true};
  var RETRYABLE = {rate_limited: true, temporarily_unavailable: true, server_error: true};
  var NUMBER_RE = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
  var QUEUED_TEXT = "Not sent yet: kept on this device";

  function tid(name) { return root.querySelector('[data-testid="' + name + '"]'); }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function clientTime() { return new Date().toISOString(); }

  // --- what this device remembers (localStorage, shared by the tabs of this browser) ---------------------
  //   v: {question_id: highest version this device allocated}
  //   q: {question_id: {value, version, t, n}}  committed, not yet acknowledged
  //   unsaved: {question_id: {value, n}}        refused because the attempt had closed
  //   flags: {question_id: bool}; events: [queued integrity events]; pos, viewed: sequential progress
  var KEY = "aula.exam.attempt." + cfg.attempt_id;
  var storageOk = (function () {
    try {
      window.localStorage.setItem(KEY + ".probe", "1");
      window.localStorage.removeItem(KEY + ".probe");
      return true;
    } catch (e) {
      return false;
    }
  })();
  var memoryStore = {};

  function readStore() {
    var s = memoryStore;
    if (storageOk) {
      try { s = JSON.parse(window.localStorage.getItem(KEY) || "{}") || {}; } catch (e) { s = memoryStore; }
    }
    s.v = s.v || {};
    s.q = s.q || {};
    s.flags = s.flags || {};
    s.events = s.events || [];
    s.unsaved = s.unsaved || {};
    return s;
  }

  function writeStore(s) {
    memoryStore = s;
    if (!storageOk) return;
    try {
      window.localStorage.setItem(KEY, JSON.stringify(s));
    } catch (e) {
      notice("This browser is not keeping answers between reloads (storage is full or blocked). " +
             "Stay online until you submit.");
    }
  }

  function update(fn) {
    var s = readStore();
    var result = fn(s);
    writeStore(s);
    return result;
  }

  function forgetStore() {
    memoryStore = {};
    if (storageOk) {
      try { window.localStorage.removeItem(KEY); } catch (e) { /* nothing to forget */ }
    }
  }

  // --- page state ------------------------------------------------------------------------------------
  var state = cfg.state;
  var deadline = null, graceUntil = null, extraMinutes = null, lastSeq = null;
  var clock = new X.ServerClock();
  var questions = [], byId = {};
  var rendered = false, sequential = false, current = 0;
  var sock = null, live = false, downSince = 0;
  var syncs = {}, syncCount = 0, syncWatch = null, lastOverSync = 0;
  var submitting = false, submitTimer = null, finished = false;
  var canEdit = null, phase = "pending", warned = {};
  var inflight = {}, saveWatch = null;
  var SAVE_ACK_MS = 8000;         // a save not acknowledged by then: the socket is half-open, drop it

  var conn = tid("connection-state");
  var countdown = tid("countdown");

  function announce(text) {
    var a = tid("announcer");
    if (a) a.textContent = text;
  }

  function notice(text) {
    var n = tid("notice");
    if (!n) return;
    n.textContent = text;
    n.hidden = !text;
  }

  function setConn(stateName, text) {
    if (!conn) return;
    conn.dataset.state = stateName;
    conn.textContent = text;
  }

  // --- questions -------------------------------------------------------------------------------------
  function pointsText(points) {
    var n = parseFloat(points);
    if (isNaN(n)) return "";
    return n === 1 ? "1 point" : String(n) + " points";
  }

  function buildQuestion(data, n, total) {
    var q = {id: String(data.id), data: data, kind: data.kind, n: n, inputs: [], timer: null,
             serverVersion: 0, shownVersion: -1, status: "", retries: 0};
    var li = el("li", "question");
    li.id = "q-" + q.id;
    li.setAttribute("data-testid", "question");
    li.dataset.questionId = q.id;
    li.dataset.kind = q.kind;
    li.tabIndex = -1;
    var head = el("div", "q-head");
    var title = el("h2", "q-title", "Question " + n + (total ? " of " + total : ""));
    head.appendChild(title);
    head.appendChild(el("span", "q-points muted", pointsText(data.points)));
    li.appendChild(head);
    var prompt = el("p", "q-prompt", data.prompt);
    prompt.id = "q-" + q.id + "-prompt";
    li.appendChild(prompt);

    var schedule = function (ms) { return function () { scheduleSave(q, ms); }; };
    if (q.kind === "single" || q.kind === "multiple" || q.kind === "true_false") {
      var fieldset = el("fieldset", "q-options");
      fieldset.setAttribute("aria-labelledby", prompt.id);
      var options = q.kind === "true_false"
        ? [{index: "true", label: "True"}, {index: "false", label: "False"}]
        : (data.options || []);
      options.forEach(function (opt) {
        var label = el("label", "check option");
        var input = document.createElement("input");
        input.type = q.kind === "multiple" ? "checkbox" : "radio";
        input.name = "q" + q.id;
        input.value = String(opt.index);
        input.className = "answer-input";
        input.addEventListener("change", schedule(CHOICE_DEBOUNCE_MS));
        label.appendChild(input);
        label.appendChild(el("span", "option-label", opt.label));
        fieldset.appendChild(label);
        q.inputs.push(input);
      });
      li.appendChild(fieldset);
    } else {
      var id = "q-" + q.id + "-answer";
      var label = el("label", "q-answer-label",
                     q.kind === "numeric" ? "Your answer (a number)" : "Your answer");
      label.htmlFor = id;
      var input;
      if (q.kind === "essay") {
        input = document.createElement("textarea");
        input.rows = 8;
        input.maxLength = 20000;
      } else {
        input = document.createElement("input");
        input.type = "text";
        input.autocomplete = "off";
        if (q.kind === "numeric") input.inputMode = "decimal";
        else input.maxLength = 200;
      }
      input.id = id;
      input.className = "answer-input";
      input.spellcheck = q.kind === "essay";
      input.addEventListener("input", schedule(TEXT_DEBOUNCE_MS));
      input.addEventListener("change", function () { if (q.timer) commit(q); });
      li.appendChild(label);
      li.appendChild(input);
      q.inputs.push(input);
    }

    var foot = el("div", "q-foot");
    var flagLabel = el("label", "check flag");
    var flag = document.createElement("input");
    flag.type = "checkbox";
    flag.setAttribute("data-testid", "flag");
    flag.addEventListener("change", function () { setFlag(q, flag.checked); });
    flagLabel.appendChild(flag);
    flagLabel.appendChild(el("span", null, "Flag for review"));
    q.flag = flag;
    var status = el("span", "save-state");
    status.setAttribute("data-testid", "save-state");
    status.setAttribute("role", "status");
    q.statusEl = status;
    foot.appendChild(flagLabel);
    foot.appendChild(status);
    li.appendChild(foot);
    q.li = li;
    return q;
  }

  function readValue(q) {
    var checked;
    switch (q.kind) {
      case "single":
        checked = q.inputs.filter(function (i) { return i.checked; })[0];
        return checked ? [Number(checked.value)] : [];
      case "multiple":
        return q.inputs.filter(function (i) { return i.checked; }).map(function (i) { return Number(i.value); });
      case "true_false":
        checked = q.inputs.filter(function (i) { return i.checked; })[0];
        return checked ? checked.value === "true" : null;
      case "numeric":
        var text = q.inputs[0].value.trim();
        return text === "" ? null : text;
      default:
        return q.inputs[0].value;
    }
  }

  function writeValue(q, value) {
    switch (q.kind) {
      case "single":
      case "multiple":
        var chosen = Array.isArray(value) ? value.map(String) : [];
        q.inputs.forEach(function (i) { i.checked = chosen.indexOf(i.value) !== -1; });
        break;
      case "true_false":
        q.inputs.forEach(function (i) { i.checked = value !== null && value !== undefined && i.value === String(value); });
        break;
      default:
        q.inputs[0].value = value === null || value === undefined ? "" : String(value);
    }
  }

  function isAnswered(value) {
    return !(value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length));
  }

  // A number as the server parses it; a decimal comma is accepted ("3,14").
  function normalizeNumber(text) {
    var t = String(text).replace(/\s+/g, "");
    if (/^[+-]?\d*,\d+$/.test(t)) t = t.replace(",", ".");
    return NUMBER_RE.test(t) ? t : null;
  }

  function setStatus(q, name, text) {
    q.status = name;
    q.statusEl.dataset.state = name;
    q.statusEl.textContent = text;
    q.li.dataset.save = name;
  }

  function pendingStatus(q) {
    if (live) setStatus(q, "saving", "Saving…");
    else setStatus(q, "queued", QUEUED_TEXT);
  }

  // --- autosave ----------------------------------------------------------------------------------------
  function scheduleSave(q, ms) {
    if (!canEdit) return;
    clearTimeout(q.timer);
    setStatus(q, "saving", "Saving…");
    q.timer = setTimeout(function () { commit(q); }, ms);
    updateNav();
  }

  function commit(q, force) {
    clearTimeout(q.timer);
    q.timer = null;
    if (!canEdit && !force) return;
    var value = readValue(q);
    if (q.kind === "numeric" && value !== null) {
      value = normalizeNumber(value);
      if (value === null) {
        setStatus(q, "error", "Not saved: enter a number, for example 3.14");
        return;
      }
    }
    var version = update(function (s) {
      var v = Math.max(s.v[q.id] || 0, q.serverVersion) + 1;
      s.v[q.id] = v;
      s.q[q.id] = {value: value, version: v, t: clientTime(), n: q.n};
      delete s.unsaved[q.id];
      return v;
    });
    q.shownVersion = version;
    q.retries = 0;
    sendAnswer(q.id);
    updateNav();
  }

  // Commit every edit still waiting for its pause (before Submit, Next, or the lock at the deadline).
  function commitAll(force) {
    questions.forEach(function (q) { if (q.timer) commit(q, force); });
  }

  function sendAnswer(qid) {
    var e = readStore().q[qid];
    var q = byId[qid];
    if (!e) return;
    var sent = live && sock.send({type: "answer.save", ref: "a" + qid + "." + e.version, question_id: Number(qid),
                                  value: e.value, version: e.version, client_time: e.t});
    if (sent) {
      inflight[qid] = {at: performance.now(), version: e.version};
      if (!saveWatch) saveWatch = setTimeout(checkSaves, SAVE_ACK_MS);
    }
    if (q) {
      if (sent) setStatus(q, "saving", "Saving…");
      else setStatus(q, "queued", QUEUED_TEXT);
    }
  }

  function checkSaves() {
    saveWatch = null;
    var now = performance.now(), waiting = false, stale = false;
    Object.keys(inflight).forEach(function (qid) {
      waiting = true;
      if (now - inflight[qid].at >= SAVE_ACK_MS - 100) stale = true;
    });
    if (stale && live) sock.drop();  // reconnect; the snapshot and the resend settle what was stored
    else if (waiting) saveWatch = setTimeout(checkSaves, SAVE_ACK_MS);
  }

  function onSaveAck(d) {
    var qid = String(d.question_id);
    if (inflight[qid] && d.version >= inflight[qid].version) delete inflight[qid];
    var q = byId[qid];
    if (q && d.version > q.serverVersion) q.serverVersion = d.version;
    var resend = false;
    update(function (s) {
      var e = s.q[qid];
      if (e && d.version >= e.version) {
        if (d.version > e.version && !d.applied) {
          // Another tab saved a newer version in between: what this tab shows is the student's latest
          // edit, so it goes again above the server's version.
          var v = Math.max(s.v[qid] || 0, d.version) + 1;
          s.v[qid] = v;
          e.version = v;
          resend = true;
        } else {
          delete s.q[qid];
        }
      }
      if (s.unsaved[qid] && s.unsaved[qid].version === d.version) delete s.unsaved[qid];
    });
    if (resend) {
      if (q) q.shownVersion = Math.max(q.shownVersion, d.version + 1);
      sendAnswer(qid);
      return;
    }
    if (q && !q.timer && !readStore().q[qid]) setStatus(q, "saved", "Saved");
  }

  function onSaveError(qid, version, code, message, details) {
    var q = byId[qid];
    delete inflight[qid];
    if (RETRYABLE[code] && (!q || q.retries < 5)) {
      if (q) q.retries += 1;
      var wait = ((details && details.retry_after) || 2) * 1000 + Math.random() * 500;
      setTimeout(function () { sendAnswer(qid); }, wait);
      return;
    }
    update(function (s) {
      var e = s.q[qid];
      if (e && e.version === version) delete s.q[qid];
    });
    if (q) setStatus(q, "error", "Not saved: " + (message || "the server refused this answer."));
  }

  function flush() {
    if (!live) return;
    var s = readStore();
    Object.keys(s.q).forEach(sendAnswer);
    // After the answers: on one socket the server handles messages in order, so a `viewed` for the next
    // question of a sequential exam never overtakes the last save of the previous one.
    s.events.forEach(sendEvent);
  }

  // Answers that can no longer be saved (the attempt closed): keep them on the page and on this device.
  function markUnsaved(reason) {
    var s = readStore();
    var changed = false;
    questions.forEach(function (q) {
      if (q.timer) {
        clearTimeout(q.timer);
        q.timer = null;
        var value = readValue(q);
        if (isAnswered(value)) {
          s.unsaved[q.id] = {value: value, n: q.n, version: 0};
          changed = true;
          setStatus(q, "unsaved", "Not saved: " + reason);
        } else if (q.status === "saving") {
          setStatus(q, "", "");
        }
      }
    });
    Object.keys(s.q).forEach(function (qid) {
      var e = s.q[qid];
      s.unsaved[qid] = {value: e.value, n: e.n, version: e.version};
      var q = byId[qid];
      if (q) setStatus(q, "unsaved", "Not saved: " + reason);
      changed = true;
    });
    s.q = {};
    if (changed) writeStore(s);
  }

  // --- HTTP fallback -----------------------------------------------------------------------------------
  var httpBusy = false;

  function errorMessage(body) {
    return body && body.error && body.error.message ? body.error.message : "the server refused this answer.";
  }

  function httpFlush() {
    if (httpBusy || finished) return;
    var ids = Object.keys(readStore().q);
    if (!ids.length) return;
    httpBusy = true;
    (function next(i) {
      if (i >= ids.length || live) { httpBusy = false; return; }
      var qid = ids[i];
      var e = readStore().q[qid];
      if (!e) { next(i + 1); return; }
      X.requestJSON("POST", cfg.api.answer, {question_id: Number(qid), value: e.value, version: e.version,
                                             client_time: e.t}, cfg.csrf).then(function (r) {
        if (r.status === 200 && r.body) {
          onSaveAck(r.body);
          next(i + 1);
        } else if (r.status === 409) {
          httpBusy = false;
          onClosedByServer();
        } else if (r.status === 400) {
          onSaveError(qid, e.version, "invalid", errorMessage(r.body), {});
          next(i + 1);
        } else {
          httpBusy = false;  // signed out, or a server error: try again on the next round or the socket
        }
      }, function () { httpBusy = false; });
    })(0);
  }

  function httpClock() {
    var sent = performance.now();
    X.requestJSON("GET", cfg.api.clock).then(function (r) {
      if (r.status !== 200 || !r.body) return;
      clock.sample(r.body.server_time, sent, performance.now());
      applyStatus(r.body);
    }, function () { /* offline: the next round tries again */ });
  }

  var lastHttpClock = 0;
  function fallbackRound() {
    if (live || finished || !OPEN[state]) return;
    if (performance.now() - downSince < FALLBACK_AFTER_MS) return;
    httpFlush();
    if (!clock.ready() || performance.now() - lastHttpClock > SYNC_EVERY_MS) {
      lastHttpClock = performance.now();
      httpClock();
    }
  }

  // --- integrity events --------------------------------------------------------------------------------
  function queueEvent(kind, fields) {
    if (!OPEN[state] || finished) return;
    var ev = {id: X.randomHex(8), kind: kind, client_time: clientTime()};
    Object.keys(fields || {}).forEach(function (k) { ev[k] = fields[k]; });
    update(function (s) {
      s.events.push(ev);
      if (s.events.length > MAX_EVENTS) s.events.splice(0, s.events.length - MAX_EVENTS);
    });
    if (live) sendEvent(ev);
  }

  function sendEvent(ev) {
    var msg = {type: "attempt.event", ref: "e" + ev.id, kind: ev.kind, client_time: ev.client_time};
    if (ev.question_id !== undefined) msg.question_id = ev.question_id;
    if (ev.duration_ms !== undefined) msg.duration_ms = ev.duration_ms;
    sock.send(msg);
  }

  function removeEvent(id) {
    update(function (s) { s.events = s.events.filter(function (e) { return e.id !== id; }); });
  }

  function setFlag(q, on) {
    update(function (s) { s.flags[q.id] = on; });
    queueEvent(on ? "flagged" : "unflagged", {question_id: Number(q.id)});
    updateNav();
  }

  // Leaving the page (another tab, another window) is recorded with how long it lasted. It is shown to
  // teachers as information; it never flags a student by itself.
  var awaySince = null, unloading = false;
  function focusLost() {
    if (awaySince !== null || unloading || !OPEN[state] || finished) return;
    awaySince = performance.now();
    queueEvent("focus_lost", {});
  }
  function focusRegained() {
    if (awaySince === null) return;
    var ms = Math.min(86400000, Math.max(0, Math.round(performance.now() - awaySince)));
    awaySince = null;
    queueEvent("focus_regained", {duration_ms: ms});
  }

  // --- rendering ---------------------------------------------------------------------------------------
  function render(exam, list, answers) {
    rendered = true;
    sequential = !!exam.sequential;
    if (exam.instructions) {
      tid("instructions-text").textContent = exam.instructions;
      tid("instructions").hidden = false;
    }
    var ol = tid("questions");
    list.forEach(function (data, i) {
      var q = buildQuestion(data, i + 1, sequential ? list.length : 0);
      questions.push(q);
      byId[q.id] = q;
      ol.appendChild(q.li);
    });
    tid("loading").hidden = true;
    tid("actions").hidden = false;
    if (sequential) {
      var s = readStore();
      var furthest = 0;
      questions.forEach(function (q, i) { if (answers && answers[q.id]) furthest = i; });
      current = Math.min(questions.length - 1, Math.max(s.pos || 0, furthest));
      tid("next").addEventListener("click", nextQuestion);
      showCurrent(false);
    } else {
      buildNav();
    }
  }

  function buildNav() {
    var nav = tid("question-nav");
    var ol = nav.querySelector("ol");
    questions.forEach(function (q) {
      var li = el("li");
      var a = el("a", "qnav-item", String(q.n));
      a.href = "#q-" + q.id;
      a.setAttribute("aria-label", "Question " + q.n);
      a.addEventListener("click", function (ev) {
        ev.preventDefault();
        q.li.scrollIntoView({block: "start"});
        q.li.focus({preventScroll: true});
      });
      q.navItem = a;
      li.appendChild(a);
      ol.appendChild(li);
    });
    nav.hidden = questions.length < 2;
  }

  function updateNav() {
    questions.forEach(function (q) {
      if (!q.navItem) return;
      q.navItem.dataset.answered = isAnswered(readValue(q)) ? "true" : "false";
      q.navItem.dataset.flagged = q.flag.checked ? "true" : "false";
    });
  }

  function showCurrent(focus) {
    questions.forEach(function (q, i) { q.li.hidden = i !== current; });
    tid("next").hidden = current >= questions.length - 1;
    var q = questions[current];
    if (!q) return;
    var viewed = update(function (s) {
      s.pos = current;
      var seen = typeof s.viewed === "number" ? s.viewed : -1;
      if (current > seen) s.viewed = current;
      return current > seen;
    });
    if (viewed) queueEvent("viewed", {question_id: Number(q.id)});
    if (focus) q.li.focus();
  }

  function nextQuestion() {
    var q = questions[current];
    if (!q || current >= questions.length - 1) return;
    if (q.timer) commit(q);
    if (q.status === "error") {
      tid("submit-note").textContent = "Fix this answer or clear it before going on: you cannot come back to it.";
      return;
    }
    tid("submit-note").textContent = "";
    current += 1;
    showCurrent(true);
  }

  // Apply the server's answers (snapshot), keeping what this device has and the server does not yet.
  function applyAnswers(answers) {
    var s = readStore();
    var changed = false;
    questions.forEach(function (q) {
      var a = answers[q.id];
      var sv = a ? a.version : 0;
      if (sv > q.serverVersion) q.serverVersion = sv;
      var e = s.q[q.id];
      if (e && e.version > sv) {
        if (!q.timer && q.shownVersion < e.version) {
          writeValue(q, e.value);
          q.shownVersion = e.version;
        }
        if (!q.timer) pendingStatus(q);
      } else {
        if (e) {
          delete s.q[q.id];  // stored already, or superseded by a newer answer from elsewhere
          changed = true;
        }
        if (!q.timer) {
          if (a && sv > q.shownVersion) {
            writeValue(q, a.value);
            q.shownVersion = sv;
          }
          if (q.status !== "error" || a) setStatus(q, a ? "saved" : "", a ? "Saved" : "");
        }
      }
      q.flag.checked = q.id in s.flags ? !!s.flags[q.id] : !!(a && a.flagged);
    });
    if (changed) writeStore(s);
    updateNav();
  }

  // --- state and time ----------------------------------------------------------------------------------
  function applyStatus(a) {
    if (!a) return;
    if (a.deadline !== undefined) deadline = a.deadline ? X.parseTime(a.deadline) : null;
    if (a.grace_until !== undefined) graceUntil = a.grace_until ? X.parseTime(a.grace_until) : null;
    if (typeof a.extra_minutes === "number") {
      if (extraMinutes !== null && a.extra_minutes > extraMinutes) {
        var more = a.extra_minutes - extraMinutes;
        notice("Your teacher gave you " + more + " more minute" + (more === 1 ? "" : "s") + ".");
        announce("You have " + more + " more minutes.");
      }
      extraMinutes = a.extra_minutes;
    }
    if (a.state && a.state !== state) {
      state = a.state;
      root.dataset.state = state;
    }
    if (FINISHED[state]) finish();
    else if (state === "overdue") markUnsaved("time is up");
    tick();
  }

  function tick() {
    if (finished || !countdown) return;
    if (clock.jumped()) {
      clock.invalidate();
      timeSync();
    }
    var now = clock.now();
    var left = 0;
    if (now === null || deadline === null) {
      phase = "pending";
    } else if (state === "in_progress" && now < deadline) {
      phase = "running";
      left = deadline - now;
    } else if (graceUntil !== null && now < graceUntil) {
      phase = "grace";
      left = graceUntil - now;
    } else {
      phase = "over";
    }
    countdown.dataset.phase = phase;
    var label = {pending: "Time left", running: "Time left", grace: "Time is up: you can only submit now",
                 over: "Time is up"}[phase];
    tid("countdown-label").textContent = label;
    tid("countdown-value").textContent = phase === "pending" ? "--:--" : X.formatSeconds(left / 1000);
    countdown.dataset.remainingMs = phase === "pending" ? "" : String(Math.round(left));
    countdown.classList.toggle("low", phase === "running" && left <= 300000);
    if (phase === "running") {
      [[300000, "5 minutes left."], [60000, "1 minute left."]].forEach(function (w) {
        if (left <= w[0] && left > w[0] - 30000 && !warned[w[0]]) {
          warned[w[0]] = true;
          announce(w[1]);
        }
      });
    }
    if (phase === "over" && OPEN[state] && performance.now() - lastOverSync > 5000) {
      lastOverSync = performance.now();  // learn from the server that it closed the attempt
      timeSync();
    }
    refreshLock();
  }

  function refreshLock() {
    var editable = !finished && !submitting && state === "in_progress" && phase !== "grace" && phase !== "over";
    if (editable !== canEdit) {
      if (!editable && canEdit) commitAll(true);  // the last edits go out; the server decides if in time
      canEdit = editable;
      questions.forEach(function (q) {
        q.inputs.forEach(function (i) {
          if (i.type === "radio" || i.type === "checkbox") i.disabled = !editable;
          else i.readOnly = !editable;
        });
        q.flag.disabled = !editable;
      });
      root.classList.toggle("locked", !editable);
    }
    var submit = tid("submit");
    if (submit) submit.disabled = finished || submitting || !OPEN[state];
  }

  function timeSync() {
    if (!live) {
      if (performance.now() - downSince >= FALLBACK_AFTER_MS) httpClock();
      return;
    }
    syncCount += 1;
    var ref = "t" + syncCount;
    syncs[ref] = performance.now();
    sock.send({type: "time.sync", ref: ref, client_time: clientTime()});
    clearTimeout(syncWatch);
    syncWatch = setTimeout(function () {
      if (syncs[ref] !== undefined && live) sock.drop();
    }, SYNC_TIMEOUT_MS);
  }

  function onTime(d, received) {
    var sent = syncs[d.ref];
    delete syncs[d.ref];
    clock.sample(d.server_time, sent === undefined ? null : sent, received);
    applyStatus({deadline: d.deadline, grace_until: d.grace_until, state: d.state});
  }

  // --- finishing ---------------------------------------------------------------------------------------
  function finish() {
    if (finished) return;
    finished = true;
    clearTimeout(submitTimer);
    markUnsaved(state === "abandoned" ? "the attempt was closed first" : "the attempt was submitted first");
    canEdit = true;  // force refreshLock to lock every input
    refreshLock();
    var dialog = tid("submit-dialog");
    if (dialog && dialog.open) dialog.close("cancel");
    tid("actions").hidden = true;
    // A sequential exam keeps showing only what the student reached.
    questions.forEach(function (q, i) { q.li.hidden = sequential && i > current; });
    tid("next").hidden = true;
    var box = tid("attempt-state");
    box.textContent = "";
    box.dataset.state = state;
    var title = el("h2", null, state === "abandoned" ? "Not submitted" : "Submitted");
    title.setAttribute("data-testid", "attempt-state-title");
    box.appendChild(title);
    box.appendChild(el("p", null, state === "abandoned"
      ? "The time ran out before this attempt was submitted, so it is not counted."
      : "Your answers were received. They are shown below, read-only."));
    var s = readStore();
    var unsaved = Object.keys(s.unsaved).length;
    if (unsaved) {
      box.appendChild(el("p", "error", unsaved + " answer" + (unsaved === 1 ? " was" : "s were") +
                         " not saved in time. They stay on this page and on this device."));
    }
    var p = el("p");
    var link = el("a", null, "Your result");
    link.href = cfg.result_url;
    link.setAttribute("data-testid", "result-link");
    p.appendChild(link);
    p.appendChild(el("span", "muted", " (available when your teacher releases grades)"));
    box.appendChild(p);
    box.hidden = false;
    if (countdown) countdown.hidden = true;
    if (conn) conn.hidden = true;
    announce(state === "abandoned" ? "The attempt was closed." : "Submitted.");
    if (sock) sock.stop();
    live = false;
    showSecondTab();
    if (channel) channel.postMessage({kind: "bye", tab: TAB_ID});
    // Keep only what was not saved; everything else about this attempt leaves the device.
    if (unsaved) writeStore({unsaved: s.unsaved}); else forgetStore();
  }

  function onClosedByServer() {
    markUnsaved("time is up");
    timeSync();  // the state (overdue or submitted) follows
  }

  function openSubmitDialog() {
    var dialog = tid("submit-dialog");
    commitAll(false);
    var answered = questions.filter(function (q) { return isAnswered(readValue(q)); }).length;
    var flagged = questions.filter(function (q) { return q.flag.checked; }).length;
    var summary = "You answered " + answered + " of " + questions.length + " question" +
                  (questions.length === 1 ? "" : "s") + ".";
    if (flagged) summary += " " + flagged + " flagged for review.";
    tid("submit-summary").textContent = summary;
    dialog.returnValue = "";  // a value left from an earlier, failed submission must not submit on Escape
    if (typeof dialog.showModal === "function") dialog.showModal();
    else if (window.confirm(summary + " Submit now?")) doSubmit();
  }

  function doSubmit() {
    if (submitting || finished) return;
    submitting = true;
    commitAll(true);
    refreshLock();
    var note = tid("submit-note");
    note.textContent = "Submitting…";
    var until = performance.now() + SUBMIT_WAIT_MS;
    (function waitForSaves() {
      if (finished) return;
      var pending = Object.keys(readStore().q).length;
      if (!pending) { sendSubmit(); return; }
      if (!live) httpFlush();
      if (performance.now() > until) {
        submitting = false;
        note.textContent = pending + " answer" + (pending === 1 ? " is" : "s are") + " not saved yet. " +
          "Check your connection and press Submit again; nothing is lost.";
        refreshLock();
        return;
      }
      setTimeout(waitForSaves, 200);
    })();
  }

  function sendSubmit() {
    var payload = {client_time: clientTime()};
    if (live && sock.send({type: "attempt.submit", ref: "submit", client_time: payload.client_time})) {
      clearTimeout(submitTimer);
      submitTimer = setTimeout(function () { submitOverHttp(payload); }, 10000);
    } else {
      submitOverHttp(payload);
    }
  }

  function submitOverHttp(payload) {
    if (finished) return;
    X.requestJSON("POST", cfg.api.submit, payload, cfg.csrf).then(function (r) {
      if (r.status === 200 && r.body) onSubmitted(r.body);
      else submitFailed("The server did not accept the submission (" + r.status + "). Try again.");
    }, function () {
      submitFailed("Could not reach the server. Your answers are kept on this device: press Submit again " +
                   "when you are back online.");
    });
  }

  function onSubmitted(d) {
    clearTimeout(submitTimer);
    submitting = false;
    tid("submit-note").textContent = "";
    applyStatus(d);
  }

  function submitFailed(message) {
    clearTimeout(submitTimer);
    submitting = false;
    tid("submit-note").textContent = message;
    refreshLock();
  }

  // --- other tabs with this attempt ----------------------------------------------------------------------
  // The server warns when a second connection joins the attempt; tabs of this same browser also find each
  // other directly (BroadcastChannel), so the warning shows in every one of them, both ways.
  var serverTabs = 0, peers = {}, TAB_ID = X.randomHex(6), channel = null;
  var PEER_EVERY_MS = 4000, PEER_GONE_MS = 10000;

  function showSecondTab() {
    var now = performance.now();
    Object.keys(peers).forEach(function (id) { if (now - peers[id] > PEER_GONE_MS) delete peers[id]; });
    var banner = tid("second-tab");
    if (banner) banner.hidden = finished || !(serverTabs > 1 || Object.keys(peers).length > 0);
  }

  function startPeers() {
    if (typeof window.BroadcastChannel !== "function") return;
    channel = new window.BroadcastChannel(KEY);
    channel.onmessage = function (ev) {
      var m = ev.data || {};
      if (!m.tab || m.tab === TAB_ID) return;
      if (m.kind === "bye") delete peers[m.tab];
      else peers[m.tab] = performance.now();
      if (m.kind === "hello") channel.postMessage({kind: "here", tab: TAB_ID});
      showSecondTab();
    };
    channel.postMessage({kind: "hello", tab: TAB_ID});
    setInterval(function () {
      if (!finished) channel.postMessage({kind: "here", tab: TAB_ID});
      showSecondTab();
    }, PEER_EVERY_MS);
    window.addEventListener("pagehide", function () { channel.postMessage({kind: "bye", tab: TAB_ID}); });
  }

  // --- the socket ------------------------------------------------------------------------------------
  function setLive(on) {
    if (on === live) return;
    live = on;
    if (!on) {
      downSince = performance.now();
      syncs = {};
      inflight = {};
      clearTimeout(syncWatch);
      questions.forEach(function (q) { if (q.status === "saving" && !q.timer) pendingStatus(q); });
    }
  }

  function onSocketState(name, detail) {
    if (finished) return;
    if (name === "closed") {
      setLive(false);
      var why = {"signed-out": "Signed out. Sign in again to continue; your answers are kept on this device.",
                 "forbidden": "This attempt is no longer available to you.",
                 "not-found": "This attempt is no longer available to you."}[detail.reason];
      setConn("closed", why || "Disconnected.");
      return;
    }
    setLive(false);
    if (detail.reason === "too-many") {
      setConn("reconnecting", "Too many open tabs: close the others. Reconnecting…");
    } else if (!navigator.onLine || name === "reconnecting") {
      setConn("reconnecting", navigator.onLine ? "Reconnecting… your answers are kept on this device."
                                                : "Offline. Your answers are kept on this device.");
    } else {
      setConn("connecting", "Connecting…");
    }
  }

  function onFrame(f, received) {
    var d = f.data || {};
    switch (f.type) {
      case "snapshot": onSnapshot(d, received); break;
      case "ack": onAck(d); break;
      case "error": onError(d); break;
      case "time": onTime(d, received); break;
      case "attempt.status":
        if (typeof f.seq === "number") {
          if (lastSeq !== null && f.seq <= lastSeq) return;  // already applied
          var gap = lastSeq !== null && f.seq > lastSeq + 1;
          lastSeq = f.seq;
          if (gap) timeSync();  // an update went missing: ask for the current deadline and state
        }
        applyStatus(d);
        break;
      case "attempt.second_tab":
        serverTabs = d.tabs || 0;
        showSecondTab();
        break;
      case "sys.lagged":
      case "sys.resync":
        timeSync();
        break;
    }
  }

  function onSnapshot(d, received) {
    clock.sample(d.server_time, null, received);
    if (typeof d.last_seq === "number") lastSeq = d.last_seq;
    if (!rendered && d.questions && d.questions.length) render(d.exam || {}, d.questions, d.answers || {});
    if (rendered) applyAnswers(d.answers || {});
    applyStatus(d.attempt || {});
    if (finished) return;
    setLive(true);
    setConn("live", "Connected");
    flush();
    timeSync();  // a timed sample right away: the snapshot alone has no round trip
  }

  function onAck(d) {
    var ref = d.ref || "";
    if (ref.charAt(0) === "a") onSaveAck(d);
    else if (ref.charAt(0) === "e") removeEvent(ref.slice(1));
    else if (ref === "submit") onSubmitted(d);
  }

  function onError(d) {
    var ref = d.ref || "";
    if (d.code === "attempt_closed") {
      if (ref === "submit") timeSync();
      onClosedByServer();
      return;
    }
    var m = /^a(\d+)\.(\d+)$/.exec(ref);
    if (m) {
      onSaveError(m[1], Number(m[2]), d.code, d.message, d.details || {});
    } else if (ref === "submit") {
      submitFailed(d.message || "The submission failed. Try again.");
    } else if (ref.charAt(0) === "e" && !RETRYABLE[d.code]) {
      removeEvent(ref.slice(1));  // refused for good: do not send it again
    }
  }

  // --- unsaved answers of a closed attempt (the page opened again after it closed) ----------------------
  function showUnsaved() {
    var s = readStore();
    Object.keys(s.q).forEach(function (qid) { s.unsaved[qid] = s.q[qid]; });
    var ids = Object.keys(s.unsaved);
    var box = tid("unsaved");
    if (!ids.length || !box) {
      forgetStore();
      return;
    }
    var list = tid("unsaved-list");
    ids.sort(function (a, b) { return (s.unsaved[a].n || 0) - (s.unsaved[b].n || 0); });
    ids.forEach(function (qid) {
      var entry = s.unsaved[qid];
      var value = entry.value;
      var text = Array.isArray(value) ? "Options " + value.join(", ") : String(value);
      var id = "unsaved-" + qid;
      var label = el("label", null, "Question " + (entry.n || "?"));
      label.htmlFor = id;
      var area = el("textarea");
      area.id = id;
      area.readOnly = true;
      area.rows = Math.min(10, Math.max(2, text.split("\n").length));
      area.value = text;
      list.appendChild(label);
      list.appendChild(area);
    });
    box.hidden = false;
    tid("unsaved-forget").addEventListener("click", function () {
      forgetStore();
      box.hidden = true;
    });
  }

  // --- start -------------------------------------------------------------------------------------------
  if (!OPEN[state]) {
    if (FINISHED[state]) showUnsaved();
    return;
  }

  if (cfg.initial) {
    applyStatus(cfg.initial.attempt);
    if (cfg.initial.questions && cfg.initial.questions.length) {
      render(cfg.initial.exam || {}, cfg.initial.questions, cfg.initial.answers || {});
      applyAnswers(cfg.initial.answers || {});
    }
  }
  canEdit = null;
  refreshLock();

  var dialog = tid("submit-dialog");
  tid("submit").addEventListener("click", openSubmitDialog);
  dialog.addEventListener("close", function () {
    if (dialog.returnValue === "submit") doSubmit();
  });

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") {
      focusLost();
    } else {
      focusRegained();
      clock.invalidate();
      timeSync();
    }
  });
  window.addEventListener("beforeunload", function () { unloading = true; });  // a reload is not leaving
  window.addEventListener("pageshow", function () { unloading = false; });
  window.addEventListener("blur", focusLost);
  window.addEventListener("focus", focusRegained);
  window.addEventListener("online", function () { if (!live) fallbackRound(); });

  startPeers();
  downSince = performance.now();
  sock = new X.ExamSocket(cfg.ws_path, {onFrame: onFrame, onState: onSocketState});
  setInterval(tick, 250);
  setInterval(timeSync, SYNC_EVERY_MS);
  setInterval(fallbackRound, FALLBACK_EVERY_MS);
})();
