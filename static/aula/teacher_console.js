/* Teacher console of the live session page: session start/end, class timer, class-wide locks, clearing the
 * chat, creating polls, the hand queue and the roster with per-student actions. It renders from the room
 * state kept by session_room.js (window.aulaRoom) and sends over the same socket; the server re-checks
 * every action, so this file only decides what a teacher sees.
 */
(function () {
  "use strict";
  var room = window.aulaRoom;
  if (!room) return;
  var S = room.state, h = room.h, q = room.q, setText = room.setText, show = room.show;
  var FEATURES = ["chat", "hand", "polls", "reactions", "whiteboard", "notes"];

  function active() { return !!(S.you && S.you.can_moderate) && !S.closed; }

  /* Send a message; show the server's error (or `okText`) in `note`. `done(err, data)` runs after. */
  function send(msg, note, okText, done) {
    var sock = room.socket;
    if (!sock) return;
    sock.send(msg, function (err, data) {
      if (note) {
        setText(note, err ? err.message : (okText || ""));
        note.classList.toggle("error", !!err);
      }
      if (done) done(err, data);
    });
  }

  // --- session controls: start / end, timer, class-wide locks, clear chat -----------------------------------
  var panel = q("[data-testid=session-controls]");
  var note = q("[data-testid=console-note]", panel);
  var startBtn = q("[data-testid=session-start]", panel);
  var endBtn = q("[data-testid=session-end]", panel);
  var timerForm = q("[data-testid=timer-form]", panel);
  var timerStop = q("[data-testid=timer-stop]", panel);
  var clearBtn = q("[data-testid=chat-clear]", panel);
  var lockBoxes = Array.prototype.slice.call(panel.querySelectorAll(".locks input[type=checkbox]"));

  startBtn.addEventListener("click", function () { send({type: "session.start"}, note, "The session is live."); });

  endBtn.addEventListener("click", function () {
    room.askReason({title: "End the session for everyone?", input: false, danger: true, confirm: "End session",
                    text: "Everyone is disconnected and cannot rejoin. Attendance is computed shortly after."})
      .then(function (ok) { if (ok !== null) send({type: "session.end"}, note); });
  });

  timerForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var minutes = parseFloat(String(timerForm.elements.minutes.value).replace(",", "."));
    var seconds = Math.round(minutes * 60);
    if (!(seconds >= 1 && seconds <= 6 * 3600)) {
      setText(note, "A timer runs between a few seconds and 6 hours.");
      note.classList.add("error");
      return;
    }
    send({type: "control.timer_start", seconds: seconds, label: timerForm.elements.label.value.trim()}, note,
         "Timer started.");
  });

  timerStop.addEventListener("click", function () { send({type: "control.timer_stop"}, note, "Timer stopped."); });

  lockBoxes.forEach(function (box) {
    box.addEventListener("change", function () {
      var locked = box.checked;
      box.dataset.busy = "1";
      box.disabled = true;
      send({type: "control.lock", feature: box.value, locked: locked}, note, "", function (err) {
        box.dataset.busy = "";
        box.disabled = !active();
        if (err) box.checked = !locked;
      });
    });
  });

  clearBtn.addEventListener("click", function () {
    room.askReason({title: "Clear the chat for everyone?", label: "Reason (kept in the audit log)", required: true,
                    confirm: "Clear chat", danger: true})
      .then(function (reason) { if (reason) send({type: "chat.clear", reason: reason}, note, "Chat cleared."); });
  });

  function renderSessionPanel() {
    var status = S.session ? S.session.status : "scheduled";
    var on = active();
    show(startBtn, status === "scheduled");
    startBtn.disabled = !on;
    endBtn.disabled = !on || status === "ended";
    var locked = S.controls.locked_features || [];
    lockBoxes.forEach(function (box) {
      if (box.dataset.busy === "1") return;  // the server's answer decides
      box.checked = locked.indexOf(box.value) >= 0;
      box.disabled = !on;
    });
    timerStop.disabled = !on || !S.controls.timer;
    q("[data-testid=timer-start]", panel).disabled = !on;
    clearBtn.disabled = !on;
  }

  // --- poll creator -------------------------------------------------------------------------------------------
  var pollForm = q("[data-testid=poll-create]");
  var optionList = q(".pc-option-list", pollForm);
  var optionsBox = q(".pc-options", pollForm);
  var addBtn = q("[data-testid=poll-add-option]", pollForm);
  var quizBox = q("[data-testid=poll-quiz]", pollForm);
  var anonBox = q("[data-testid=poll-anonymous]", pollForm);
  var pollNote = q("[data-testid=poll-create-note]", pollForm);
  var optionSerial = 0;

  function kind() { return pollForm.querySelector("input[name=kind]:checked").value; }

  function addOption(focus) {
    if (optionList.children.length >= 12) return;
    optionSerial += 1;
    var id = "pc-option-" + optionSerial;
    var input = h("input", {id: id, maxlength: 200, "data-testid": "poll-option-input", autocomplete: "off"});
    var li = h("li", {class: "pc-option"}, [
      h("label", {for: id, class: "sr-only pc-option-label"}),
      input,
      h("label", {class: "check pc-correct"}, [h("input", {type: "checkbox", "data-testid": "poll-option-correct"}),
                                               " correct"]),
      h("button", {type: "button", class: "link pc-remove", text: "Remove", onclick: function () {
        if (optionList.children.length <= 2) { input.value = ""; input.focus(); return; }
        li.remove();
        syncPollForm();
        addBtn.focus();
      }})
    ]);
    optionList.appendChild(li);
    syncPollForm();
    if (focus) input.focus();
  }

  function syncPollForm() {
    var open = kind() === "open";
    show(optionsBox, !open);
    quizBox.disabled = open;
    if (open) quizBox.checked = false;
    anonBox.disabled = quizBox.checked;  // a quiz records who answered what
    if (quizBox.checked) anonBox.checked = false;
    Array.prototype.forEach.call(optionList.children, function (li, i) {
      setText(q(".pc-option-label", li), "Option " + (i + 1));
      q(".pc-remove", li).setAttribute("aria-label", "Remove option " + (i + 1));
      show(q(".pc-correct", li), quizBox.checked);
    });
    addBtn.disabled = optionList.children.length >= 12;
  }

  function resetPollForm() {
    pollForm.reset();
    optionList.textContent = "";
    addOption(false);
    addOption(false);
    syncPollForm();
  }

  addBtn.addEventListener("click", function () { addOption(true); });
  pollForm.addEventListener("change", syncPollForm);

  pollForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var question = pollForm.elements.question.value.trim();
    var k = kind();
    var options = [], correct = [];
    if (k !== "open") {
      Array.prototype.forEach.call(optionList.children, function (li) {
        var label = q("[data-testid=poll-option-input]", li).value.trim();
        if (!label) return;
        if (q("[data-testid=poll-option-correct]", li).checked) correct.push(options.length);
        options.push(label);
      });
    }
    var problem = null;
    if (!question) problem = "Write a question.";
    else if (k !== "open" && options.length < 2) problem = "Give at least two options.";
    else if (quizBox.checked && !correct.length) problem = "Mark the correct option.";
    else if (quizBox.checked && k === "single" && correct.length !== 1) problem = "A one-choice quiz has exactly one correct option.";
    if (problem) {
      setText(pollNote, problem);
      pollNote.classList.add("error");
      return;
    }
    var submit = q("[data-testid=poll-start]", pollForm);
    submit.disabled = true;
    send({type: "poll.create", question: question, kind: k, options: options, anonymous: anonBox.checked,
          quiz: quizBox.checked, correct: correct, results: pollForm.elements.results.value},
         pollNote, "Poll started.", function (err) {
           submit.disabled = false;
           if (!err) resetPollForm();
         });
  });

  // --- hand queue ---------------------------------------------------------------------------------------------
  var queueCard = q("[data-testid=hand-queue]");
  var queueList = q("[data-testid=queue-list]", queueCard);
  var queueEmpty = q(".queue-empty", queueCard);
  var callNext = q("[data-testid=call-next]", queueCard);
  var lowerAll = q("[data-testid=lower-all]", queueCard);
  var lastCalled = q("[data-testid=last-called]", queueCard);
  var queueRows = {};

  callNext.addEventListener("click", function () {
    send({type: "hand.call_next"}, null, null, function (err, data) {
      if (err) setText(lastCalled, err.message);
      else if (data && !data.user_id) setText(lastCalled, "No hands are raised.");
    });
  });
  lowerAll.addEventListener("click", function () { send({type: "hand.lower_all"}, lastCalled, "All hands lowered."); });

  function renderQueue() {
    var seen = {};
    S.hands.forEach(function (hand, i) {
      var id = hand.user.id;
      seen[id] = true;
      var row = queueRows[id];
      if (!row) {
        row = queueRows[id] = {};
        row.li = h("li", {class: "queue-row", "data-testid": "queue-row", dataset: {userId: id}});
        row.label = h("span", {class: "queue-name"});
        row.btn = h("button", {type: "button", class: "secondary small", "data-testid": "queue-lower", text: "Lower",
                               "aria-label": "Lower the hand of " + hand.user.name,
                               onclick: function () { send({type: "hand.lower", user_id: id}, lastCalled); }});
        row.li.appendChild(row.label);
        row.li.appendChild(document.createTextNode(" "));
        var t = room.timeNode(hand.raised_at);
        if (t) { row.li.appendChild(t); row.li.appendChild(document.createTextNode(" ")); }
        row.li.appendChild(row.btn);
      }
      setText(row.label, hand.user.name);
      if (queueList.children[i] !== row.li) queueList.insertBefore(row.li, queueList.children[i] || null);
    });
    Object.keys(queueRows).forEach(function (id) {
      if (!seen[id]) {
        if (queueRows[id].li.contains(document.activeElement)) callNext.focus();
        queueRows[id].li.remove();
        delete queueRows[id];
      }
    });
    setText(q("[data-testid=hand-count]", queueCard), S.hands.length);
    show(queueEmpty, !S.hands.length);
    callNext.disabled = !active() || !S.hands.length;
    lowerAll.disabled = !active() || !S.hands.length;
    if (S.lastCalled) setText(lastCalled, "You called on " + S.lastCalled.name + ".");
  }

  // --- roster with presence and per-student actions -----------------------------------------------------------
  var rosterCard = q("[data-testid=roster-card]");
  var rosterList = q("[data-testid=roster]", rosterCard);
  var rosterNote = q("[data-testid=roster-note]", rosterCard);
  var rosterRows = {};
  var ROLE_TEXT = {teacher: "teacher", ta: "TA", student: ""};

  function people() {
    var byId = {};
    (S.roster || []).forEach(function (r) { byId[r.id] = {id: r.id, name: r.name, role: r.role}; });
    var users = S.presence.users || {};
    Object.keys(users).forEach(function (uid) {
      var m = users[uid].metas[0];
      if (!byId[uid] && m) byId[uid] = {id: +uid, name: m.name, role: m.role};
    });
    return Object.keys(byId).map(function (k) { return byId[k]; }).sort(function (a, b) {
      var sa = a.role === "student" ? 1 : 0, sb = b.role === "student" ? 1 : 0;
      return sa - sb || a.name.localeCompare(b.name) || a.id - b.id;
    });
  }

  function participant(id) {
    return S.participants[id] || {user_id: id, locked_features: [], can_screen_share: false, removed: false};
  }

  function lock(id, feature, locked, done) {
    send({type: "control.lock", feature: feature, locked: locked, user_id: id}, rosterNote, "", done);
  }

  function buildRow(p) {
    var r = {id: p.id};
    r.li = h("li", {class: "person", "data-testid": "roster-row", dataset: {userId: p.id}});
    r.name = h("span", {class: "person-name", "data-testid": "person-name"});
    r.role = h("span", {class: "muted person-role"});
    r.state = h("span", {class: "state", "data-testid": "presence-state"});
    r.flags = h("span", {class: "person-flags muted", "data-testid": "person-flags"});
    r.li.appendChild(h("div", {class: "person-head"}, [r.name, " ", r.role, " ", r.state]));
    r.li.appendChild(r.flags);
    if (p.role !== "student") return r;

    r.mute = h("button", {type: "button", class: "secondary small", "data-testid": "mute-chat", onclick: function () {
      var muted = participant(p.id).locked_features.indexOf("chat") >= 0;
      lock(p.id, "chat", !muted);
    }});
    r.share = h("button", {type: "button", class: "secondary small", "data-testid": "screen-share", onclick: function () {
      send({type: "control.screen_share", user_id: p.id, allowed: !participant(p.id).can_screen_share}, rosterNote);
    }});
    r.remove = h("button", {type: "button", class: "secondary small danger", "data-testid": "remove", onclick: function () {
      if (participant(p.id).removed) {
        send({type: "control.readmit", user_id: p.id}, rosterNote, p.name + " may rejoin.");
        return;
      }
      room.askReason({title: "Remove " + p.name + " from this session?", required: false, danger: true,
                      text: "They are disconnected and cannot rejoin until you readmit them.",
                      label: "Reason (optional, kept in the audit log)", confirm: "Remove"})
        .then(function (reason) {
          if (reason !== null) send({type: "control.remove", user_id: p.id, reason: reason}, rosterNote);
        });
    }});
    r.locks = {};
    var boxes = FEATURES.filter(function (f) { return f !== "chat"; }).map(function (f) {
      var box = h("input", {type: "checkbox", value: f, "data-testid": "lock-" + f});
      box.addEventListener("change", function () {
        var locked = box.checked;
        box.dataset.busy = "1";
        box.disabled = true;
        lock(p.id, f, locked, function (err) {
          box.dataset.busy = "";
          box.disabled = !active();
          if (err) box.checked = !locked;
        });
      });
      r.locks[f] = box;
      return h("label", {class: "check"}, [box, " " + room.featureText[f]]);
    });
    var more = h("details", {class: "more-locks"}, [h("summary", {text: "Turn off for " + p.name})].concat(boxes));
    r.li.appendChild(h("div", {class: "row person-actions"}, [r.mute, r.share, r.remove]));
    r.li.appendChild(more);
    return r;
  }

  function updateRow(r, p) {
    var st = room.userState(p.id);
    var part = participant(p.id);
    var me = S.you && S.you.id === p.id;
    setText(r.name, p.name);
    setText(r.role, [ROLE_TEXT[p.role] || p.role, me ? "you" : ""].filter(Boolean).join(", "));
    setText(r.state, room.stateLabel[st]);
    r.state.className = "state state-" + st;
    r.li.dataset.state = st;
    r.li.classList.toggle("removed", !!part.removed);
    var flags = [];
    var handPos = room.handPosition(p.id);
    if (handPos) flags.push("hand up (#" + handPos + ")");
    if (part.removed) flags.push("removed");
    if (part.locked_features.indexOf("chat") >= 0) flags.push("chat muted");
    var others = part.locked_features.filter(function (f) { return f !== "chat"; });
    if (others.length) flags.push("no " + others.map(function (f) { return room.featureText[f]; }).join(", "));
    if (part.can_screen_share) flags.push("may share screen");
    setText(r.flags, flags.join(" · "));
    if (!r.mute) return;
    var muted = part.locked_features.indexOf("chat") >= 0;
    setText(r.mute, muted ? "Unmute chat" : "Mute chat");
    r.mute.setAttribute("aria-label", (muted ? "Unmute chat for " : "Mute chat for ") + p.name);
    setText(r.share, part.can_screen_share ? "Revoke screen share" : "Allow screen share");
    r.share.setAttribute("aria-label", (part.can_screen_share ? "Revoke screen share for " : "Allow screen share for ") + p.name);
    setText(r.remove, part.removed ? "Readmit" : "Remove");
    r.remove.setAttribute("aria-label", (part.removed ? "Readmit " : "Remove ") + p.name);
    r.remove.dataset.action = part.removed ? "readmit" : "remove";
    var on = active();
    [r.mute, r.share, r.remove].forEach(function (b) { b.disabled = !on; });
    Object.keys(r.locks).forEach(function (f) {
      var box = r.locks[f];
      if (box.dataset.busy === "1") return;
      box.checked = part.locked_features.indexOf(f) >= 0;
      box.disabled = !on;
    });
  }

  function renderRoster() {
    var list = people();
    var online = 0;
    var seen = {};
    list.forEach(function (p, i) {
      seen[p.id] = true;
      var r = rosterRows[p.id] || (rosterRows[p.id] = buildRow(p));
      updateRow(r, p);
      if (r.li.dataset.state !== "offline") online += 1;
      if (rosterList.children[i] !== r.li) rosterList.insertBefore(r.li, rosterList.children[i] || null);
    });
    Object.keys(rosterRows).forEach(function (id) {
      if (!seen[id]) { rosterRows[id].li.remove(); delete rosterRows[id]; }
    });
    setText(q("[data-testid=roster-online]", rosterCard), online);
  }

  // --- wiring -------------------------------------------------------------------------------------------------
  function renderAll() {
    if (!S.you || !S.you.can_moderate) return;
    renderSessionPanel();
    renderQueue();
    renderRoster();
  }

  room.on(function (topic) {
    if (topic === "chat.message" || topic === "chat.deleted") return;
    renderAll();
  });
  resetPollForm();
  renderAll();  // the snapshot may have arrived before this script ran

  // --- connection health (a `health` frame every few seconds; docs/observability.md) -------------------------
  var healthBox = q("[data-testid=health-box]");
  function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + " %"; }
  function ms(v) { return v === null || v === undefined ? "–" : Math.round(v) + " ms"; }
  function renderHealth(d) {
    if (!healthBox) return;
    show(healthBox, true);
    var fields = {
      "health-success": pct(d.success_rate),
      "health-failures": String(d.failures || 0),
      "health-reconnects": d.reconnects_per_participant === null ? "–" : String(d.reconnects_per_participant),
      "health-latency": ms(d.latency_p50_ms) + " / " + ms(d.latency_p95_ms) + " / " + ms(d.latency_p99_ms),
      "health-current": String(d.current || 0) + " (peak " + String(d.peak || 0) + ")",
      "health-player": String(d.player_errors || 0)
    };
    Object.keys(fields).forEach(function (id) { setText(q("[data-testid=" + id + "]", healthBox), fields[id]); });
    var bad = d.failure_rate !== null && d.failure_rate !== undefined && d.failure_rate > 0.02;
    healthBox.classList.toggle("warn", bad);
  }
  room.on(function (topic, data) { if (topic === "health") renderHealth(data); });
})();
