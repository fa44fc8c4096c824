/* Live session page: one socket, the room's state, and the widgets everyone in the room sees (connection,
 * chat, polls, hand raise, presence, class timer, idle/away reporting). The teacher console
 * (teacher_console.js) works on the same state through `window.aulaRoom`.
 *
 * Every piece of user text (names, messages, poll questions and answers) goes into the page through
 * textContent, never innerHTML.
 */
(function () {
  "use strict";
  var root = document.querySelector(".room[data-session-id]");
  if (!root || root.dataset.closed) return;

  var SESSION_ID = root.dataset.sessionId;
  var IDLE_MS = (parseInt(root.dataset.idleSeconds, 10) || 180) * 1000;
  var CHAT_MAX = parseInt(root.dataset.chatMax, 10) || 2000;
  var CHAT_DOM_LIMIT = 300;   // older messages are pruned from the page (they stay in the database)
  var ATTENDANCE_URL = root.dataset.attendanceUrl || "";
  var FEATURE_TEXT = {chat: "chat", hand: "hand raising", polls: "polls", reactions: "reactions",
                      whiteboard: "the whiteboard", notes: "the shared notes"};
  var STATE_RANK = {active: 3, idle: 2, away: 1};
  var STATE_LABEL = {active: "active", idle: "idle", away: "away", offline: "offline"};
  var CLOSED_TEXT = {
    removed: "You were removed from this session by the teacher.",
    ended: "The session has ended.",
    "signed-out": "You are signed out.",
    forbidden: "You are not in this class.",
    "not-found": "This session does not exist.",
    stopped: "Disconnected."
  };

  // --- DOM helpers ----------------------------------------------------------------------------------------
  function q(sel, scope) { return (scope || root).querySelector(sel); }

  // Build an element. `text` sets textContent; strings among children become text nodes (never markup).
  function h(tag, props, children) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "text") node.textContent = v;
        else if (k === "class") node.className = v;
        else if (k === "dataset") Object.keys(v).forEach(function (d) { node.dataset[d] = v[d]; });
        else if (k.slice(0, 2) === "on" && typeof v === "function") node.addEventListener(k.slice(2), v);
        else if (k === "hidden" || k === "disabled" || k === "checked" || k === "value") node[k] = v;
        else node.setAttribute(k, v === true ? "" : String(v));
      });
    }
    (children || []).forEach(function (c) {
      if (c === null || c === undefined || c === false) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function setText(node, text) {
    text = text === null || text === undefined ? "" : String(text);
    if (node && node.textContent !== text) node.textContent = text;
  }

  function show(node, visible) { if (node) node.hidden = !visible; }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function duration(seconds) {
    var hrs = Math.floor(seconds / 3600), min = Math.floor((seconds % 3600) / 60), sec = seconds % 60;
    return (hrs ? hrs + ":" + pad(min) : String(min)) + ":" + pad(sec);
  }

  // --- a small event bus for the teacher console ------------------------------------------------------------
  var listeners = [];
  function on(fn) { listeners.push(fn); }
  function changed(topic, data) {
    listeners.forEach(function (fn) {
      try { fn(topic, data); } catch (e) { if (window.console) console.error(e); }
    });
  }

  // --- state ------------------------------------------------------------------------------------------------
  var S = {
    you: null, session: null, controls: {locked_features: [], timer: null}, participants: {}, roster: null,
    polls: {}, pollOrder: [], hands: [], presence: {count: 0, users: null}, conn: "connecting", closed: null,
    lastCalled: null
  };

  function canModerate() { return !!(S.you && S.you.can_moderate); }
  function myId() { return S.you ? S.you.id : null; }
  function myState() { return S.participants[myId()] || null; }

  /* Why the current user cannot use `feature` now (a sentence to show), or null. */
  function blockReason(feature) {
    if (S.closed) return CLOSED_TEXT[S.closed] || "Disconnected.";
    if (!S.you) return "Connecting…";
    if (S.session && S.session.status === "ended") return CLOSED_TEXT.ended;
    if (canModerate()) return null;
    var mine = myState();
    if (mine && mine.removed) return CLOSED_TEXT.removed;
    if ((S.controls.locked_features || []).indexOf(feature) >= 0) {
      return "The teacher has turned off " + FEATURE_TEXT[feature] + " for the class.";
    }
    if (mine && (mine.locked_features || []).indexOf(feature) >= 0) {
      return feature === "chat" ? "The teacher has muted your chat." :
        "The teacher has turned off " + FEATURE_TEXT[feature] + " for you.";
    }
    return null;
  }

  /* Presence state of a user from their connections: the liveliest tab wins; none means offline. */
  function userState(userId) {
    var users = S.presence.users;
    var entry = users && users[String(userId)];
    if (!entry || !entry.metas.length) return "offline";
    var best = "away";
    entry.metas.forEach(function (m) { if ((STATE_RANK[m.state] || 0) > STATE_RANK[best]) best = m.state; });
    return best;
  }

  // --- screen reader announcements (batched so a busy chat does not flood) ---------------------------------
  var announcer = q("[data-testid=announcer]");
  var toAnnounce = [];
  var announceTimer = null;
  function announce(text) {
    toAnnounce.push(text);
    if (announceTimer) return;
    announceTimer = setTimeout(function () {
      announceTimer = null;
      var batch = toAnnounce.splice(0);
      setText(announcer, batch.length > 3 ? batch.length + " new messages. Last: " + batch[batch.length - 1] :
        batch.join(". "));
    }, 400);
  }

  // --- reason / confirmation dialog ---------------------------------------------------------------------------
  var dialog = q("[data-testid=reason-dialog]");

  /* Ask for a confirmation (input: false) or a reason. Resolves with the trimmed text, or null if cancelled. */
  function askReason(opts) {
    return new Promise(function (resolve) {
      var input = q("#reason-input", dialog);
      var field = q(".dialog-field", dialog);
      var confirm = q("[data-testid=reason-confirm]", dialog);
      var text = q(".dialog-text", dialog);
      var wantsInput = opts.input !== false;
      var opener = document.activeElement;
      setText(q("#reason-title", dialog), opts.title);
      setText(text, opts.text || "");
      show(text, !!opts.text);
      show(field, wantsInput);
      setText(q("label", field), opts.label || "Reason");
      input.value = "";
      input.required = wantsInput && !!opts.required;
      if (input.required) input.setAttribute("pattern", ".*\\S.*"); else input.removeAttribute("pattern");
      setText(confirm, opts.confirm || "Confirm");
      confirm.classList.toggle("danger", !!opts.danger);
      if (typeof dialog.showModal !== "function") {  // very old browsers
        var answer = wantsInput ? window.prompt(opts.title) : (window.confirm(opts.title) ? "" : null);
        resolve(answer === null ? null : answer.trim());
        return;
      }
      dialog.returnValue = "";
      dialog.addEventListener("close", function done() {
        dialog.removeEventListener("close", done);
        if (opener && opener.focus && document.contains(opener)) opener.focus();
        resolve(dialog.returnValue === "ok" ? (wantsInput ? input.value.trim() : "") : null);
      });
      dialog.showModal();
      if (wantsInput) input.focus(); else confirm.focus();
    });
  }

  // --- connection state ---------------------------------------------------------------------------------------
  var connEl = q("[data-testid=connection-state]");
  var banner = q("[data-testid=room-banner]");
  var CONN_TEXT = {connecting: "Connecting…", live: "Live — connected", reconnecting: "Reconnecting…"};

  function onConnState(state, detail) {
    var wasLive = S.conn === "live";
    S.conn = state;
    var text = CONN_TEXT[state] || state;
    if (state !== "closed" && detail.reason === "too-many-connections") {
      text += " (too many Aula tabs are open: close one)";
    }
    if (state === "closed") {
      S.closed = detail.reason;
      text = "Disconnected — " + (CLOSED_TEXT[detail.reason] || "the connection was closed.");
      showClosedBanner(detail.reason);
      connEl.dataset.reason = detail.reason;
      show(q("[data-testid=presence]"), false);  // nobody's presence is known any more
    }
    setText(connEl, text);
    connEl.dataset.state = state;
    if (state === "live" && !wasLive) {  // a new connection (not an in-place resume after a gap)
      presenceReset();
      flushOutbox();
    }
    renderControls();
    changed("conn", state);
  }

  function showClosedBanner(reason) {
    banner.textContent = "";
    banner.appendChild(h("p", null, [h("strong", {text: CLOSED_TEXT[reason] || "Disconnected."})]));
    if (reason === "removed") {
      banner.appendChild(h("p", null, [
        "Ask your teacher if you think this is a mistake. ",
        h("a", {href: location.pathname, text: "Try to rejoin"})]));
    } else if (reason === "ended" && ATTENDANCE_URL) {
      banner.appendChild(h("p", null, [h("a", {href: ATTENDANCE_URL, text: "See the attendance"})]));
    } else if (reason === "signed-out") {
      banner.appendChild(h("p", null, [
        h("a", {href: "/accounts/login/?next=" + encodeURIComponent(location.pathname), text: "Sign in again"})]));
    }
    banner.hidden = false;
  }

  // --- session status, class timer, presence ------------------------------------------------------------------
  var statusEl = q("[data-testid=session-status]");
  var STATUS_TEXT = {scheduled: "Not started yet", live: "Live", ended: "Ended"};

  function renderSession() {
    if (!S.session) return;
    setText(statusEl, STATUS_TEXT[S.session.status] || S.session.status);
    statusEl.dataset.status = S.session.status;
  }

  var timerEl = q("[data-testid=class-timer]");
  var timerTick = null;
  var timerSeenRunning = null;

  // Counts down to the server's ends_at on the server's clock (measured offset), never the raw client clock.
  function renderTimer() {
    var t = S.controls.timer;
    var ends = t && t.ends_at ? AulaSocket.parseTime(t.ends_at) : NaN;
    if (isNaN(ends)) {
      show(timerEl, false);
      clearInterval(timerTick);
      timerTick = null;
      return;
    }
    var left = Math.max(0, Math.ceil((ends - sock.now()) / 1000));
    // Never more than the timer's own length: the measured clock offset includes the snapshot's travel
    // time, so just after a start the estimate could read a second above it.
    var started = t.started_at ? AulaSocket.parseTime(t.started_at) : NaN;
    if (!isNaN(started)) left = Math.min(left, Math.round((ends - started) / 1000));
    show(timerEl, true);
    setText(q(".timer-label", timerEl), (t.label || "Timer") + ":");
    setText(q(".timer-left", timerEl), left > 0 ? duration(left) : "time's up");
    timerEl.dataset.secondsLeft = left;
    if (left > 0) {
      timerSeenRunning = t.ends_at;
      if (!timerTick) timerTick = setInterval(renderTimer, 250);
    } else {
      clearInterval(timerTick);
      timerTick = null;
      if (timerSeenRunning === t.ends_at) {
        timerSeenRunning = null;
        announce((t.label || "Timer") + ": time is up.");
      }
    }
  }

  var presCount = q("[data-testid=presence-count]");
  var presList = q("[data-testid=presence-list]");

  function presenceReset() {
    // A new connection joins as "active"; report the real state again.
    reportedState = "active";
    evaluateActivity();
  }

  function applyPresenceDiff(d) {
    var users = S.presence.users;
    if (users) {
      // Leaves first: a state change arrives as leave(old meta) + join(new meta) of the same connection.
      Object.keys(d.leaves || {}).forEach(function (uid) {
        var entry = users[uid];
        if (!entry) return;
        var gone = d.leaves[uid].metas.map(function (m) { return m.conn; });
        entry.metas = entry.metas.filter(function (m) { return gone.indexOf(m.conn) < 0; });
        if (!entry.metas.length) delete users[uid];
      });
      Object.keys(d.joins || {}).forEach(function (uid) {
        var entry = users[uid] || (users[uid] = {metas: []});
        d.joins[uid].metas.forEach(function (m) {
          entry.metas = entry.metas.filter(function (x) { return x.conn !== m.conn; });
          entry.metas.push(m);
        });
      });
    }
    if (d.count !== null && d.count !== undefined) S.presence.count = d.count;
    else if (users) S.presence.count = Object.keys(users).length;
  }

  function renderPresence() {
    setText(presCount, S.presence.count);
    if (!presList) return;
    presList.textContent = "";
    var users = S.presence.users;
    if (!users) {
      presList.appendChild(h("li", {class: "muted", text: "The list of names is not shown in large classes."}));
      return;
    }
    var people = Object.keys(users).map(function (uid) {
      var m = users[uid].metas[0] || {};
      return {id: uid, name: m.name || "?", role: m.role, state: userState(uid)};
    });
    people.sort(function (a, b) {
      var ta = a.role === "student" ? 1 : 0, tb = b.role === "student" ? 1 : 0;
      return ta - tb || a.name.localeCompare(b.name);
    });
    people.forEach(function (p) {
      presList.appendChild(h("li", {dataset: {userId: p.id, state: p.state}}, [
        h("span", {text: p.name}),
        p.role && p.role !== "student" ? h("span", {class: "muted", text: " (" + (p.role === "ta" ? "TA" : p.role) + ")"}) : null,
        p.state !== "active" ? h("span", {class: "state state-" + p.state, text: " " + STATE_LABEL[p.state]}) : null
      ]));
    });
  }

  // --- idle / away reporting (attendance counts active, idle and away time) -----------------------------------
  var lastInput = Date.now();
  var reportedState = "active";

  function evaluateActivity() {
    if (!sock || !sock.isOpen()) return;
    var state = document.visibilityState === "hidden" ? "away" : (Date.now() - lastInput >= IDLE_MS ? "idle" : "active");
    if (state === reportedState) return;
    if (sock.send({type: "presence.state", state: state})) reportedState = state;
  }

  function onInput() {
    lastInput = Date.now();
    if (reportedState === "idle") evaluateActivity();
  }

  ["keydown", "pointerdown", "pointermove", "wheel", "touchstart", "scroll"].forEach(function (type) {
    document.addEventListener(type, onInput, {capture: true, passive: true});
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") lastInput = Date.now();
    evaluateActivity();
  });
  setInterval(evaluateActivity, 5000);

  // --- chat ---------------------------------------------------------------------------------------------------
  var chatList = q("[data-testid=chat-list]");
  var chatEmpty = q("[data-testid=chat-empty]");
  var chatForm = q("[data-testid=chat-form]");
  var chatInput = q("[data-testid=chat-input]");
  var chatSend = q("[data-testid=chat-send]");
  var chatNote = q("[data-testid=chat-note]");
  var chatNodes = {};   // message id -> <li>
  var outbox = [];      // messages typed but not yet acknowledged: {ref, body, li}
  var cooldownUntil = 0;
  var cooldownTimer = null;
  var chatError = "";

  function nearBottom() { return chatList.scrollHeight - chatList.scrollTop - chatList.clientHeight < 48; }
  function scrollChat() { chatList.scrollTop = chatList.scrollHeight; }
  function updateChatEmpty() { show(chatEmpty, !chatList.children.length); }

  function timeNode(iso) {
    var at = AulaSocket.parseTime(iso);
    if (isNaN(at)) return null;
    var d = new Date(at);
    return h("time", {datetime: iso, title: d.toLocaleString(),
                      text: d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"})});
  }

  function chatItem(m, seq) {
    var mine = m.author.id === myId();
    var li = h("li", {class: "msg" + (mine ? " mine" : ""), "data-testid": "chat-message",
                      dataset: {id: m.id, seq: seq, author: m.author.id}}, [
      h("div", {class: "msg-head"}, [h("span", {class: "msg-author", text: m.author.name}), " ", timeNode(m.at)]),
      h("p", {class: "msg-body", text: m.body})
    ]);
    if (!mine && !canModerate()) {
      li.appendChild(h("button", {type: "button", class: "link msg-report", "data-testid": "chat-report",
                                  "aria-label": "Report message from " + m.author.name, text: "Report",
                                  onclick: function () { reportMessage(m); }}));
    }
    if (canModerate()) {
      li.appendChild(h("button", {type: "button", class: "link msg-delete", "data-testid": "chat-delete",
                                  "aria-label": "Delete message from " + m.author.name, text: "Delete",
                                  onclick: function () { deleteMessage(m); }}));
    }
    return li;
  }

  function chatAdd(m, seq, live) {
    if (!m || m.deleted || !m.author || chatNodes[m.id]) return;  // deleted text is blanked in replays
    var stick = nearBottom();
    var li = chatItem(m, seq);
    chatList.insertBefore(li, chatList.querySelector(".pending"));
    chatNodes[m.id] = li;
    pruneChat();
    updateChatEmpty();
    if (stick || m.author.id === myId()) scrollChat();
    if (live && m.author.id !== myId()) announce(m.author.name + ": " + m.body);
  }

  function pruneChat() {
    var extra = chatList.children.length - CHAT_DOM_LIMIT;
    while (extra-- > 0) {
      var first = chatList.firstElementChild;
      if (!first || first.classList.contains("pending")) break;
      if (first.dataset.id) delete chatNodes[first.dataset.id];
      chatList.removeChild(first);
    }
  }

  function chatRemove(id) {
    var li = chatNodes[id];
    if (!li) return;
    if (li.contains(document.activeElement)) chatInput.focus();
    li.remove();
    delete chatNodes[id];
    updateChatEmpty();
  }

  function chatSystem(text) {
    chatList.insertBefore(h("li", {class: "msg sys", "data-testid": "chat-system", text: text}),
                          chatList.querySelector(".pending"));
    pruneChat();
    updateChatEmpty();
    scrollChat();
  }

  function chatReset(messages) {
    Array.prototype.slice.call(chatList.querySelectorAll(".msg:not(.pending)")).forEach(function (li) { li.remove(); });
    chatNodes = {};
    messages.forEach(function (m) { chatAdd(m, m.seq, false); });
    updateChatEmpty();
    scrollChat();
  }

  function deleteMessage(m) {
    var preview = m.body.length > 120 ? m.body.slice(0, 120) + "…" : m.body;
    askReason({title: "Delete this message?", text: m.author.name + ": " + preview,
               label: "Reason (kept in the audit log)", required: true, confirm: "Delete", danger: true})
      .then(function (reason) {
        if (reason === null) return;
        sock.send({type: "chat.delete", message_id: m.id, reason: reason}, function (err) {
          if (err) { chatError = err.message; renderChatControls(); }
        });
      });
  }

  // My messages that moderation holds: shown to me only, "pending review", until a moderator decides.
  var heldNodes = {};
  function heldAdd(m) {
    if (heldNodes[m.id] || chatNodes[m.id]) return;
    var li = h("li", {class: "msg mine held", "data-testid": "chat-held", dataset: {id: m.id}}, [
      h("p", {class: "msg-body", text: m.body}),
      h("em", {class: "msg-state", text: "pending review"})
    ]);
    chatList.insertBefore(li, chatList.querySelector(".pending"));
    heldNodes[m.id] = li;
    updateChatEmpty();
    scrollChat();
  }
  function heldSettle(id, status) {
    var li = heldNodes[id];
    if (!li) return;
    delete heldNodes[id];
    if (status === "rejected") {
      setText(q(".msg-state", li), "not approved by a moderator");
      li.dataset.testid = "chat-rejected";
      setTimeout(function () { li.remove(); updateChatEmpty(); }, 8000);
    } else {
      li.remove();  // approved: it arrives as a normal message with its seq
      updateChatEmpty();
    }
  }

  function reportMessage(m) {
    askReason({title: "Report this message?", text: "A moderator will look at it. " + m.author.name + " is not told who reported it.",
               label: "What is wrong with it? (optional)", required: false, confirm: "Report"})
      .then(function (reason) {
        if (reason === null) return;
        sock.send({type: "chat.report", message_id: m.id, reason: reason || ""}, function (err) {
          chatSystem(err ? (err.message || "The report was not sent.") : "Thank you: a moderator will look at it.");
        });
      });
  }

  function markOutbox(item, text) { setText(q(".msg-state", item.li), text); }

  function sendChat(item) {
    if (item.inFlight) return;
    item.inFlight = true;
    markOutbox(item, "sending…");
    // The ref doubles as the server's idempotency key: a resend after a drop is stored once.
    sock.send({type: "chat.send", body: item.body, ref: item.ref}, function (err, reply) {
      item.inFlight = false;
      if (err && (err.code === "disconnected" || err.code === "offline")) {
        markOutbox(item, "waiting for the connection…");
        return;
      }
      var index = outbox.indexOf(item);
      if (index < 0) return;
      outbox.splice(index, 1);
      item.li.remove();
      updateChatEmpty();
      if (!err && reply && reply.status === "held") heldAdd({id: reply.id, body: item.body});
      if (!err) return;
      if (!chatInput.value) chatInput.value = item.body;  // give the text back to retry
      if (err.code === "rate_limited") startCooldown(err.details && err.details.retry_after);
      else chatError = err.message || "The message was not sent.";
      renderChatControls();
    });
  }

  function flushOutbox() { outbox.slice().forEach(sendChat); }

  function startCooldown(seconds) {
    cooldownUntil = Date.now() + Math.max(1, Math.ceil(seconds || 1)) * 1000;
    clearInterval(cooldownTimer);
    cooldownTimer = setInterval(function () {
      if (Date.now() >= cooldownUntil) { clearInterval(cooldownTimer); cooldownTimer = null; }
      renderChatControls();
    }, 250);
  }

  function renderChatControls() {
    var reason = blockReason("chat");
    var wait = Math.ceil((cooldownUntil - Date.now()) / 1000);
    chatInput.disabled = !!reason;
    chatSend.disabled = !!reason || wait > 0;
    chatForm.dataset.blocked = reason ? "true" : "false";
    var note = "";
    if (reason) note = reason;
    else if (wait > 0) note = "Slow down: you can send again in " + wait + " s.";
    else if (chatError) note = chatError;
    else if (S.conn !== "live" && S.you) note = "Offline: your messages are sent when the connection is back.";
    setText(chatNote, note);
    chatNote.classList.toggle("error", !!(reason || wait > 0 || chatError));
  }

  chatForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var body = chatInput.value.trim();
    if (!body || blockReason("chat") || Date.now() < cooldownUntil) return;
    if (body.length > CHAT_MAX) { chatError = "A message is at most " + CHAT_MAX + " characters."; renderChatControls(); return; }
    chatError = "";
    var item = {ref: AulaSocket.newRef(), body: body, li: null};
    item.li = h("li", {class: "msg mine pending", "data-testid": "chat-pending"}, [
      h("div", {class: "msg-head"}, [h("span", {class: "msg-author", text: S.you.name}), " ",
                                     h("span", {class: "msg-state muted"})]),
      h("p", {class: "msg-body", text: body})
    ]);
    chatList.appendChild(item.li);
    updateChatEmpty();
    scrollChat();
    outbox.push(item);
    chatInput.value = "";
    renderChatControls();
    sendChat(item);
  });

  chatInput.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      if (chatForm.requestSubmit) chatForm.requestSubmit(); else chatSend.click();
    }
  });
  chatInput.addEventListener("input", function () {
    if (chatError) { chatError = ""; renderChatControls(); }
  });

  // --- polls --------------------------------------------------------------------------------------------------
  var pollList = q("[data-testid=poll-list]");
  var pollsEmpty = q("[data-testid=polls-empty]");
  var pollCards = {};
  var KIND_TEXT = {single: "One choice", multiple: "Several choices", open: "Free text"};
  var attempts = {};

  // One attempt id per poll, kept across reloads: a resend after a dropped connection is counted once.
  function attemptId(pollId) {
    var key = "aula.poll-attempt." + pollId;
    try {
      var stored = window.sessionStorage.getItem(key);
      if (stored) return stored;
      stored = AulaSocket.uuid4();
      window.sessionStorage.setItem(key, stored);
      return stored;
    } catch (e) {
      return attempts[pollId] || (attempts[pollId] = AulaSocket.uuid4());
    }
  }

  function sameSet(a, b) {
    a = (a || []).slice().sort(); b = (b || []).slice().sort();
    return a.length === b.length && a.every(function (x, i) { return x === b[i]; });
  }

  function optionLabels(poll, positions) {
    return poll.options.filter(function (o) { return (positions || []).indexOf(o.position) >= 0; })
      .map(function (o) { return o.label; }).join(", ");
  }

  function buildCard(entry) {
    var p = entry.poll;
    var c = {inputs: [], busy: false, error: "", filled: false, detailsOpen: false};
    c.card = h("article", {class: "poll", "data-testid": "poll", dataset: {pollId: p.id},
                           "aria-labelledby": "poll-q-" + p.id});
    c.card.appendChild(h("h3", {id: "poll-q-" + p.id, class: "poll-q", text: p.question}));
    c.meta = h("p", {class: "poll-meta muted", "data-testid": "poll-meta"});
    c.card.appendChild(c.meta);
    if (!canModerate()) {
      c.form = h("form", {class: "poll-form", "data-testid": "poll-form"});
      var fieldset = h("fieldset", null, [h("legend", {class: "sr-only", text: p.question})]);
      if (p.kind === "open") {
        var area = h("textarea", {id: "poll-text-" + p.id, maxlength: 1000, rows: 2, "data-testid": "poll-text"});
        fieldset.appendChild(h("label", {for: area.id, text: "Your answer"}));
        fieldset.appendChild(area);
        c.inputs.push(area);
      } else {
        p.options.forEach(function (o) {
          var id = "poll-" + p.id + "-option-" + o.position;
          var input = h("input", {type: p.kind === "single" ? "radio" : "checkbox", name: "poll-" + p.id,
                                  id: id, value: String(o.position), "data-testid": "poll-option"});
          c.inputs.push(input);
          fieldset.appendChild(h("label", {class: "check option", for: id}, [input, " ", h("span", {text: o.label})]));
        });
      }
      c.form.appendChild(fieldset);
      c.submit = h("button", {type: "submit", "data-testid": "poll-submit", text: "Send answer"});
      c.note = h("p", {class: "form-note", "data-testid": "poll-note", "aria-live": "polite"});
      c.form.appendChild(c.submit);
      c.form.appendChild(c.note);
      c.form.addEventListener("submit", function (e) { e.preventDefault(); answerPoll(p.id); });
      c.card.appendChild(c.form);
    }
    c.results = h("div", {class: "poll-results", "data-testid": "poll-results"});
    c.verdict = h("p", {class: "poll-verdict", "data-testid": "poll-verdict", hidden: true});
    c.card.appendChild(c.results);
    c.card.appendChild(c.verdict);
    if (canModerate()) {
      c.closeBtn = h("button", {type: "button", class: "secondary", "data-testid": "poll-close", text: "Close poll",
                                onclick: function () { closePoll(p.id); }});
      c.detailsBtn = h("button", {type: "button", class: "secondary", "data-testid": "poll-details-toggle",
                                  "aria-expanded": "false", "aria-controls": "poll-details-" + p.id,
                                  text: "Show who answered what", onclick: function () { toggleDetails(p.id); }});
      c.card.appendChild(h("div", {class: "row poll-tools"}, [c.closeBtn, c.detailsBtn]));
      c.teacherNote = h("p", {class: "form-note", "aria-live": "polite"});
      c.card.appendChild(c.teacherNote);
      c.details = h("div", {id: "poll-details-" + p.id, class: "poll-details", "data-testid": "poll-details", hidden: true});
      c.card.appendChild(c.details);
    }
    return c;
  }

  function renderPoll(id) {
    var entry = S.polls[id];
    if (!entry) return;
    var p = entry.poll;
    var c = pollCards[id] || (pollCards[id] = buildCard(entry));
    var closed = p.status === "closed";
    c.card.dataset.status = p.status;
    var bits = [KIND_TEXT[p.kind] || p.kind];
    if (p.quiz) bits.push("quiz");
    if (p.anonymous) bits.push("anonymous");
    if (p.results === "on_close") bits.push("results when closed");
    bits.push(closed ? "closed" : "open");
    setText(c.meta, bits.join(" · "));

    if (c.form) {
      var mine = entry.mine;
      if (mine && !c.filled && !mine.conflict) {
        c.inputs.forEach(function (input) {
          if (input.tagName === "TEXTAREA") input.value = mine.text || "";
          else input.checked = (mine.option_positions || []).indexOf(+input.value) >= 0;
        });
        c.filled = true;
      }
      var block = blockReason("polls");
      var locked = !!mine || closed || !!block || c.busy;
      c.inputs.forEach(function (input) { input.disabled = locked; });
      c.submit.hidden = !!mine || closed;
      c.submit.disabled = locked;
      c.card.dataset.answered = mine ? "true" : "false";
      var note = c.error;
      if (mine) note = mine.conflict ? "You already answered this poll." : "Answered ✓";
      else if (closed) note = "This poll is closed.";
      else if (block) note = block;
      else if (c.busy) note = "Sending…";
      setText(c.note, note);
      c.note.classList.toggle("error", !!(c.error && !mine));
    }
    renderResults(entry, c);

    var correct = entry.results && entry.results.correct;
    if (!canModerate() && p.quiz && closed && correct) {
      var answer = optionLabels(p, correct);
      var text = "The correct answer: " + answer + ".";
      if (entry.mine && !entry.mine.conflict) {
        var right = sameSet(entry.mine.option_positions, correct);
        text = right ? "Correct! ✓" : "Not quite. The correct answer: " + answer + ".";
        c.verdict.dataset.correct = right ? "true" : "false";
      }
      setText(c.verdict, text);
      show(c.verdict, true);
    } else {
      show(c.verdict, false);
    }

    if (c.closeBtn) {
      show(c.closeBtn, !closed);
      show(c.detailsBtn, !p.anonymous);
    }
  }

  function renderResults(entry, c) {
    var p = entry.poll;
    var r = entry.results;
    c.results.textContent = "";
    if (!r) {
      if (!canModerate() && p.results === "on_close" && p.status !== "closed") {
        c.results.appendChild(h("p", {class: "muted", text: "Results are shown when the teacher closes the poll."}));
      }
      return;
    }
    var total = r.respondents || 0;
    var correct = r.correct || [];
    c.results.dataset.respondents = total;
    c.results.appendChild(h("p", {class: "muted", "data-testid": "poll-respondents",
                                  text: total + (total === 1 ? " answer" : " answers")}));
    if (p.kind === "open") {
      var texts = (r.texts || []).slice(-50);
      if (texts.length) {
        c.results.appendChild(h("ul", {class: "poll-texts"}, texts.map(function (t) { return h("li", {text: t}); })));
      }
      return;
    }
    var list = h("ul", {class: "bars"});
    p.options.forEach(function (o) {
      var n = (r.counts || {})[String(o.position)] || 0;
      var pct = total ? Math.round((100 * n) / total) : 0;
      var isCorrect = correct.indexOf(o.position) >= 0;
      var fill = h("span", {class: "bar-fill"});
      fill.style.width = pct + "%";
      list.appendChild(h("li", {class: "bar" + (isCorrect ? " correct" : ""), "data-testid": "poll-result",
                                dataset: {position: o.position, count: n}}, [
        h("span", {class: "bar-label"}, [h("span", {text: o.label}), isCorrect ? h("strong", {text: " ✓ correct"}) : null]),
        h("span", {class: "bar-track", "aria-hidden": "true"}, [fill]),
        h("span", {class: "bar-count", text: n + " (" + pct + "%)"})
      ]));
    });
    c.results.appendChild(list);
  }

  function renderPolls() {
    var ids = S.pollOrder.slice().reverse();  // newest first
    Object.keys(pollCards).forEach(function (id) {
      if (!S.polls[id]) { pollCards[id].card.remove(); delete pollCards[id]; }
    });
    ids.forEach(function (id, i) {
      renderPoll(id);
      var card = pollCards[id].card;
      if (pollList.children[i] !== card) pollList.insertBefore(card, pollList.children[i] || null);
    });
    show(pollsEmpty, !ids.length);
  }

  function pollsReset(items) {
    S.polls = {};
    S.pollOrder = [];
    items.forEach(function (item) {
      S.polls[item.poll.id] = {poll: item.poll, results: item.results || null, mine: item.mine || null};
      S.pollOrder.push(item.poll.id);
    });
    // Cards are rebuilt: their inputs must reflect the fresh state, not what was typed before.
    Object.keys(pollCards).forEach(function (id) { pollCards[id].card.remove(); });
    pollCards = {};
    renderPolls();
  }

  function answerPoll(id) {
    var entry = S.polls[id];
    var c = pollCards[id];
    var p = entry.poll;
    var msg = {type: "poll.answer", poll_id: p.id, attempt_id: attemptId(p.id)};
    if (p.kind === "open") {
      var text = c.inputs[0].value.trim();
      if (!text) { c.error = "Write an answer first."; renderPoll(id); return; }
      msg.text = text;
    } else {
      msg.positions = c.inputs.filter(function (i) { return i.checked; }).map(function (i) { return +i.value; });
      if (!msg.positions.length) { c.error = "Choose an option first."; renderPoll(id); return; }
    }
    c.busy = true;
    c.error = "";
    renderPoll(id);
    sock.send(msg, function (err) {
      c.busy = false;
      if (!err) {
        entry.mine = {option_positions: msg.positions || [], text: msg.text || ""};
        c.filled = true;
      } else if (err.code === "conflict") {
        entry.mine = {conflict: true, option_positions: [], text: ""};
      } else if (err.code === "disconnected" || err.code === "offline") {
        c.error = "Not sent: the connection dropped. Send it again.";
      } else if (err.code === "rate_limited") {
        c.error = "Slow down: try again in a few seconds.";
      } else {
        c.error = err.message || "The answer was not accepted.";
      }
      renderPoll(id);
    });
  }

  function closePoll(id) {
    var c = pollCards[id];
    c.closeBtn.disabled = true;
    sock.send({type: "poll.close", poll_id: +id}, function (err) {
      c.closeBtn.disabled = false;
      setText(c.teacherNote, err ? err.message : "");
    });
  }

  function toggleDetails(id) {
    var c = pollCards[id];
    c.detailsOpen = !c.detailsOpen;
    c.detailsBtn.setAttribute("aria-expanded", c.detailsOpen ? "true" : "false");
    setText(c.detailsBtn, c.detailsOpen ? "Hide answers" : "Show who answered what");
    show(c.details, c.detailsOpen);
    if (c.detailsOpen) requestDetails(id);
  }

  function requestDetails(id) {
    var c = pollCards[id];
    if (!c || !c.detailsOpen || c.detailsInFlight) return;
    c.detailsInFlight = true;
    sock.send({type: "poll.details", poll_id: +id}, function (err, data) {
      c.detailsInFlight = false;
      if (err) { setText(c.teacherNote, err.message); return; }
      renderDetails(id, data);
    });
  }

  function renderDetails(id, data) {
    var c = pollCards[id];
    var p = S.polls[id].poll;
    c.details.textContent = "";
    if (data.anonymous) {
      c.details.appendChild(h("p", {class: "muted", text: "Anonymous poll: no names are recorded."}));
      return;
    }
    if (!data.answers.length) {
      c.details.appendChild(h("p", {class: "muted", text: "No answers yet."}));
      return;
    }
    var head = [h("th", {scope: "col", text: "Student"}), h("th", {scope: "col", text: "Answer"})];
    if (p.quiz) head.push(h("th", {scope: "col", text: "Result"}));
    var body = h("tbody");
    data.answers.forEach(function (a) {
      var cells = [h("th", {scope: "row", text: a.user.name}),
                   h("td", {text: p.kind === "open" ? a.text : optionLabels(p, a.positions)})];
      if (p.quiz) {
        cells.push(h("td", {class: a.correct ? "ok" : "bad", text: a.correct ? "✓ correct" : "✗ wrong"}));
      }
      body.appendChild(h("tr", {"data-testid": "poll-detail-row", dataset: {userId: a.user.id}}, cells));
    });
    c.details.appendChild(h("div", {class: "table-wrap"}, [
      h("table", {class: "details"}, [h("thead", null, [h("tr", null, head)]), body])]));
  }

  // --- hand raise (students) ----------------------------------------------------------------------------------
  var handBtn = q("[data-testid=hand-toggle]");
  var handStatus = q("[data-testid=hand-status]");
  var handNote = "";
  var handBusy = false;

  function handPosition(userId) {
    for (var i = 0; i < S.hands.length; i++) if (S.hands[i].user.id === userId) return i + 1;
    return 0;
  }

  function renderHand() {
    if (!handBtn) return;
    var pos = handPosition(myId());
    var block = blockReason("hand");
    handBtn.setAttribute("aria-pressed", pos ? "true" : "false");
    setText(handBtn, pos ? "Lower hand" : "Raise hand");
    handBtn.disabled = handBusy || !!S.closed || !S.you || (!!block && !pos);
    var text = handNote;
    if (pos) text = "Your hand is up: you are number " + pos + " in the queue.";
    else if (block) text = block;
    setText(handStatus, text);
    handStatus.dataset.position = pos;
  }

  if (handBtn) {
    handBtn.addEventListener("click", function () {
      var raised = handPosition(myId()) > 0;
      handBusy = true;
      handNote = "";
      renderHand();
      sock.send({type: raised ? "hand.lower" : "hand.raise"}, function (err) {
        handBusy = false;
        if (err) {
          handNote = err.code === "rate_limited" ?
            "Slow down: try again in " + Math.ceil((err.details && err.details.retry_after) || 5) + " s." :
            (err.message || "That did not work.");
        }
        renderHand();
      });
    });
  }

  // --- applying the server's state ------------------------------------------------------------------------------
  function renderControls() {
    renderChatControls();
    renderHand();
    renderPolls();
  }

  function applySnapshot(d) {
    var first = !S.you;
    S.you = d.you;
    S.session = d.session;
    S.controls = d.controls || {locked_features: [], timer: null};
    S.participants = d.participants || {};
    S.roster = d.roster;
    S.hands = (d.hands || []).map(function (x) { return {user: x.user, raised_at: x.raised_at}; });
    S.presence = {count: d.presence ? d.presence.count : 0, users: d.presence ? d.presence.users : null};
    if (first) {
      root.classList.toggle("is-teacher", canModerate());
      Array.prototype.forEach.call(root.querySelectorAll(".teacher-only"), function (el) { show(el, canModerate()); });
    }
    chatReset(d.chat || []);
    pollsReset(d.polls || []);
    renderSession();
    renderTimer();
    renderPresence();
    renderControls();
    changed("snapshot", d);
  }

  function applyEvent(frame) {
    var d = frame.data || {};
    var me = myId();
    switch (frame.type) {
      case "chat.message":
        chatAdd(d, frame.seq, true);
        break;
      case "chat.deleted":
        chatRemove(d.id);
        break;
      case "chat.held":
        heldAdd(d);
        break;
      case "chat.reviewed":
        heldSettle(d.id, d.status);
        break;
      case "moderation.decision":
        if (d.decision !== "approve" && d.decision !== "context") {
          chatSystem("A moderator acted on your message" + (d.reason ? ": " + d.reason : "") +
                     (d.until ? " (you can post again after " + new Date(AulaSocket.parseTime(d.until)).toLocaleTimeString() + ")" : "") +
                     ". See your moderation notices to appeal.");
        }
        break;
      case "moderation.item":
        if (canModerate()) {
          chatSystem(d.notify ? "Moderation: a message may need your attention (" + d.category.replace("_", " ") +
                                "). Open the moderation queue."
                              : "Moderation: a message was " + (d.reason === "held" ? "held" : "flagged") +
                                " for review. Open the moderation queue.");
        }
        break;
      case "chat.cleared":
        Object.keys(chatNodes).forEach(function (id) { if (+chatNodes[id].dataset.seq <= d.up_to_seq) chatRemove(id); });
        chatSystem(canModerate() && d.reason ? "The chat was cleared (" + d.reason + ")." : "The teacher cleared the chat.");
        break;
      case "poll.started":
        if (!S.polls[d.poll.id]) S.pollOrder.push(d.poll.id);
        S.polls[d.poll.id] = {poll: d.poll, results: null, mine: null};
        renderPolls();
        announce("New poll: " + d.poll.question);
        break;
      case "poll.results":
        var entry = S.polls[d.poll_id];
        if (!entry) break;
        // A coalesced live count can arrive after the poll closed; the stored final result wins.
        if (entry.poll.status === "closed" && d.status !== "closed") break;
        entry.results = d;
        entry.poll.status = d.status || entry.poll.status;
        renderPoll(d.poll_id);
        if (canModerate()) scheduleDetailsRefresh(d.poll_id);
        break;
      case "poll.closed":
        if (!S.polls[d.poll_id]) break;
        S.polls[d.poll_id].poll.status = "closed";
        S.polls[d.poll_id].poll.closed_at = d.closed_at;
        renderPoll(d.poll_id);
        break;
      case "poll.details":
        if (pollCards[d.poll_id]) renderDetails(d.poll_id, d);
        break;
      case "hand.raised":
        if (!handPosition(d.user.id)) S.hands.push({user: d.user, raised_at: d.raised_at});
        if (d.user.id === me) handNote = "";
        renderHand();
        break;
      case "hand.lowered":
        S.hands = S.hands.filter(function (x) { return x.user.id !== d.user_id; });
        if (d.user_id === me && (d.reason === "teacher" || d.reason === "all")) handNote = "The teacher lowered your hand.";
        renderHand();
        break;
      case "hand.called":
        S.lastCalled = d.user;
        if (d.user.id === me) {
          handNote = "The teacher called on you: go ahead!";
          announce(handNote);
        }
        renderHand();
        break;
      case "controls.updated":
        var before = (S.controls.locked_features || []).indexOf("chat") >= 0;
        S.controls = d;
        var after = (d.locked_features || []).indexOf("chat") >= 0;
        if (before !== after && !canModerate()) announce(after ? "The teacher turned off chat." : "Chat is on again.");
        renderTimer();
        renderControls();
        break;
      case "participant.updated":
        S.participants[d.user_id] = d;
        renderControls();
        break;
      case "participant.removed":
        S.participants[d.user_id] = Object.assign(
          {user_id: d.user_id, locked_features: [], can_screen_share: false}, S.participants[d.user_id] || {},
          {removed: true});
        S.hands = S.hands.filter(function (x) { return x.user.id !== d.user_id; });
        renderControls();
        break;
      case "session.status":
        S.session = Object.assign({}, S.session, d);
        renderSession();
        renderControls();
        break;
      case "presence.diff":
        applyPresenceDiff(d);
        renderPresence();
        break;
      case "presence.count":
        S.presence.count = d.count;
        renderPresence();
        break;
      case "health":  // connection health of the room, to teachers only (the console renders it)
        break;
      default:
        return;
    }
    changed(frame.type, d);
  }

  var detailsTimers = {};
  function scheduleDetailsRefresh(id) {
    if (detailsTimers[id] || !pollCards[id] || !pollCards[id].detailsOpen) return;
    detailsTimers[id] = setTimeout(function () { delete detailsTimers[id]; requestDetails(id); }, 800);
  }

  function onUnrepliedError(err) {
    // Errors for messages sent without a callback (e.g. presence updates): not worth a banner.
    if (window.console) console.warn("aula:", err.code, err.message);
  }

  // --- start --------------------------------------------------------------------------------------------------
  var sock = null;
  function start() {
    sock = new AulaSocket("/ws/v1/sessions/" + SESSION_ID + "/", {
      onState: onConnState,
      onSnapshot: applySnapshot,
      onEvent: applyEvent,
      onResumed: function (d) {
        // Private notices (muted, locked, removed) are not replayed: the server sends our own state here.
        if (d.participant) applyEvent({type: "participant.updated", seq: null, data: d.participant});
      },
      onError: onUnrepliedError,
      onClock: function () { renderTimer(); }
    });
    window.aulaSession = sock;
    window.aulaRoom.socket = sock;
  }

  window.aulaRoom = {
    state: S, socket: null, on: on, h: h, q: q, setText: setText, show: show, askReason: askReason,
    announce: announce, blockReason: blockReason, userState: userState, handPosition: handPosition,
    timeNode: timeNode, duration: duration, featureText: FEATURE_TEXT, stateLabel: STATE_LABEL,
    attendanceUrl: ATTENDANCE_URL
  };

  renderChatControls();
  renderHand();
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
