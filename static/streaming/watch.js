/* The watch page client: one socket, room events in strict seq order, chat by its own cseq (gaps in chat are
 * sampling, never a reason to resume), reconnect with backoff + resume. User text only via textContent. */
(function () {
  "use strict";
  var root = document.querySelector(".watch");
  if (!root || root.dataset.closed) return;
  var streamId = root.dataset.streamId, surface = root.dataset.surface;
  var EMOJI = {fire: "🔥", heart: "❤️", laugh: "😂", wow: "😮", clap: "👏", sad: "😢"};
  var CHAT_KEEP = 200;
  var q = function (id) { return root.querySelector('[data-testid="' + id + '"]'); };
  var ws = null, lastSeq = null, chatCseq = 0, token = null, attempt = 0, refN = 0, burstTimer = null;
  var seen = {}, myUpvotes = {}, bursts = [];
  var sampled = false, lastAck = 0, resuming = false;  // delivery latency sampling (docs/observability.md)

  function el(tag, text, cls) { var e = document.createElement(tag); if (text != null) e.textContent = text; if (cls) e.className = cls; return e; }
  function send(type, fields) { if (!ws || ws.readyState !== 1) return; var m = fields || {}; m.type = type; m.ref = "w" + (++refN) + "-" + Date.now(); ws.send(JSON.stringify(m)); }
  function setConn(state) { var c = q("connection-state"); if (c) { c.textContent = state; c.dataset.state = state; } }

  function addChat(m, pending) {
    var list = q("chat-list"); if (!list) return;
    if (seen[m.id]) {  // our own held message, now approved: it stops being "pending review"
      var mine = !pending && list.querySelector('li.pending[data-id="' + m.id + '"]');
      if (mine) { mine.classList.remove("pending"); var note = mine.querySelector(".review"); if (note) note.remove(); }
      if (m.cseq && m.cseq > chatCseq) chatCseq = m.cseq;
      return;
    }
    seen[m.id] = true;
    var li = el("li", null, pending ? "pending" : ""); li.dataset.id = m.id; li.dataset.testid = "chat-message";
    li.appendChild(el("span", m.author ? m.author.name : "", "author"));
    li.appendChild(el("span", m.deleted ? "(message removed)" : m.body, "body"));
    if (pending) li.appendChild(el("em", " pending review", "review"));
    if (!pending && !m.deleted && root.dataset.role !== "anonymous" && !li.classList.contains("mine") &&
        (!m.author || String(m.author.id) !== root.dataset.userId)) {
      var rep = el("button", "Report", "link report"); rep.type = "button"; rep.dataset.testid = "chat-report";
      rep.setAttribute("aria-label", "Report this message");
      rep.addEventListener("click", function () {
        if (window.confirm("Report this message to the moderators?")) { send("chat.report", {message_id: m.id}); rep.disabled = true; rep.textContent = "Reported"; }
      });
      li.appendChild(rep);
    }
    list.appendChild(li);
    while (list.children.length > CHAT_KEEP) { delete seen[list.firstChild.dataset.id]; list.removeChild(list.firstChild); }
    list.scrollTop = list.scrollHeight;
    if (m.cseq && m.cseq > chatCseq) chatCseq = m.cseq;
  }
  function reviewed(d) {
    var h = q("held") && q("held").querySelector('[data-id="' + d.id + '"]'); if (h) h.remove();
    var mine = q("chat-list") && q("chat-list").querySelector('li.pending[data-id="' + d.id + '"] .review');
    if (mine && d.status === "rejected") mine.textContent = " not approved";
  }
  function settingsText(s) {
    var p = []; if (s.lockdown) p.push("lockdown"); if (s.members_only) p.push("members only");
    if (s.followers_only) p.push("followers only (" + s.follow_minutes + " min)"); if (s.emote_only) p.push("emote only");
    if (s.slow_seconds) p.push("slow mode " + s.slow_seconds + " s"); if (s.hold_all) p.push("messages reviewed");
    var e = q("chat-settings"); if (e) e.textContent = p.join(" · ");
  }
  function renderPolls(polls) {
    var box = q("polls"); if (!box) return; box.textContent = "";
    polls.forEach(function (p) {
      var d = el("div", null, "poll"); d.dataset.pollId = p.id; d.appendChild(el("p", p.question, "question"));
      p.options.forEach(function (o, i) {
        var b = el("button", o + " (" + ((p.results && p.results.counts[i]) || 0) + ")"); b.type = "button";
        b.disabled = p.status !== "open" || p.mine != null;
        b.addEventListener("click", function () { send("poll.vote", {poll_id: p.id, choice: i}); p.mine = i; renderPolls(polls); });
        d.appendChild(b);
      });
      if (root.dataset.role === "moderator" || root.dataset.role === "creator") {
        if (p.status === "open") { var c = el("button", "Close"); c.type = "button"; c.addEventListener("click", function () { send("poll.close", {poll_id: p.id}); }); d.appendChild(c); }
      }
      box.appendChild(d);
    });
    root._polls = polls;
  }
  function renderQuestions(list) {
    var box = q("questions"); if (!box) return; root._questions = list; box.textContent = "";
    list.slice().sort(function (a, b) { return (a.status === "open" ? 0 : 1) - (b.status === "open" ? 0 : 1) || b.upvotes - a.upvotes; })
      .forEach(function (x) {
        if (x.status === "dismissed") return;
        var li = el("li", null, x.status); li.appendChild(el("span", x.body)); li.appendChild(el("small", " — " + x.author.name + " "));
        var up = el("button", "▲ " + x.upvotes); up.type = "button"; up.setAttribute("aria-pressed", myUpvotes[x.id] ? "true" : "false");
        up.disabled = x.status !== "open"; up.addEventListener("click", function () { send("question.upvote", {question_id: x.id}); });
        li.appendChild(up);
        if (q("moderation")) ["answered", "dismissed"].forEach(function (s) { var b = el("button", s); b.type = "button"; b.addEventListener("click", function () { send("question.mark", {question_id: x.id, status: s}); }); li.appendChild(b); });
        box.appendChild(li);
      });
  }
  function upsertQuestion(x) { var l = (root._questions || []).filter(function (y) { return y.id !== x.id; }); l.push(x); renderQuestions(l); }
  function addHeld(m) {
    var box = q("held"); if (!box) return; var li = el("li"); li.dataset.id = m.id;
    li.appendChild(el("span", m.author.name + ": ", "author")); li.appendChild(el("span", m.body));
    [["Approve", "chat.approve"], ["Reject", "chat.reject"]].forEach(function (a) { var b = el("button", a[0]); b.type = "button"; b.addEventListener("click", function () { send(a[1], {message_id: m.id}); }); li.appendChild(b); });
    box.appendChild(li);
  }
  // Reactions come one frame per window; the line shows the sum of the windows that make up the last second.
  function showBurst(d) {
    var b = q("reaction-burst"); if (!b) return; var parts = [], sum = {};
    bursts.push(d);
    var horizon = d.window_start - (1 - d.window_ms / 1000) - 0.001;
    bursts = bursts.filter(function (x) { return x.window_start > horizon && x.window_start <= d.window_start; });
    bursts.forEach(function (x) { Object.keys(x.counts).forEach(function (k) { sum[k] = (sum[k] || 0) + x.counts[k]; }); });
    Object.keys(sum).forEach(function (k) { parts.push(sum[k] + " " + (EMOJI[k] || k)); });
    b.textContent = parts.join("  ") + " in the last second";
    clearTimeout(burstTimer); burstTimer = setTimeout(function () { b.textContent = ""; bursts = []; }, 2000);
  }
  function applySnapshot(d) {
    lastSeq = d.last_seq; chatCseq = d.chat_cseq; token = d.resume_token; seen = {};
    var list = q("chat-list"); if (list) list.textContent = "";
    d.chat.forEach(function (m) { addChat(m); }); d.own_held.forEach(function (m) { addChat(m, true); });
    settingsText(d.chat_settings); (d.my_upvotes || []).forEach(function (id) { myUpvotes[id] = true; });
    renderPolls(d.polls); renderQuestions(d.questions); (d.held || []).forEach(addHeld);
    var st = q("stream-status"); if (st) st.textContent = d.stream.status;
    if (d.viewers) q("viewer-count").textContent = Math.max(d.viewers.count, 1);
    var rb = q("reaction-buttons");
    if (rb && !rb.children.length) d.reactions.forEach(function (k) { var b = el("button", EMOJI[k] || k); b.type = "button"; b.setAttribute("aria-label", k); b.addEventListener("click", function () { send("reaction", {emoji: k}); }); rb.appendChild(b); });
  }
  // Room events (with seq): applied in order; a gap asks the server to resume.
  function roomEvent(f) {
    if (lastSeq !== null && f.seq <= lastSeq) return;
    if (lastSeq !== null && f.seq > lastSeq + 1) { resuming = true; send("resume", {last_seq: lastSeq, chat_cseq: chatCseq}); return; }
    lastSeq = f.seq; var d = f.data;
    if (f.type === "stream.status") { q("stream-status").textContent = d.status; if (d.status === "ended") setConn("ended"); }
    else if (f.type === "chat.settings") settingsText(d);
    else if (f.type === "chat.deleted") { var li = q("chat-list") && q("chat-list").querySelector('[data-id="' + d.id + '"] .body'); if (li) li.textContent = "(message removed)"; }
    else if (f.type === "poll.opened") { d.results = {counts: d.options.map(function () { return 0; })}; renderPolls([d].concat(root._polls || [])); }
    else if (f.type === "poll.closed") renderPolls((root._polls || []).map(function (p) { return p.id === d.id ? Object.assign(p, {status: "closed", results: d.results}) : p; }));
    else if (f.type === "question.asked" || f.type === "question.updated") upsertQuestion(d);
  }
  // A sampled socket answers a live broadcast with its server stamp, at most once a second (never a replay).
  function latencyAck(f) {
    if (!sampled || resuming || !f.ts) return;
    var now = Date.now();
    if (now - lastAck < 1000) return;
    lastAck = now;
    send("latency.ack", {seq: f.seq != null ? f.seq : ((f.data && f.data.cseq) || 0), ts: f.ts});
  }
  function onFrame(f) {
    var d = f.data;
    if (f.type === "chat.message" || f.type === "reactions" || f.type === "viewers" || f.seq != null) latencyAck(f);
    switch (f.type) {
      case "sys.sample": sampled = !!d.latency; return;
      case "snapshot": resuming = false; applySnapshot(d); attempt = 0; setConn("live"); return;
      case "resume.done": resuming = false; token = d.resume_token; if (d.chat_cseq) chatCseq = Math.max(chatCseq, d.chat_cseq); attempt = 0; setConn("live"); return;
      case "chat.message": addChat(d); return;  // chat is ordered by cseq; a gap is sampling, not loss
      case "chat.sampled": var s = q("chat-sampled"); if (s) { s.hidden = false; s.textContent = d.skipped + " more messages flew by (fast chat)"; } if (d.last_cseq > chatCseq) chatCseq = d.last_cseq; return;
      case "chat.held": addHeld(d); return;
      case "chat.reviewed": reviewed(d); return;
      case "moderation.decision":  // to this viewer only: a moderator acted on their message
        if (d.decision !== "approve") { var me = q("chat-error"); if (me) me.textContent = "A moderator acted on your message" + (d.reason ? ": " + d.reason : "") + (d.until ? " (you can chat again after " + new Date(d.until).toLocaleTimeString() + ")" : "") + ". See Notices to appeal."; }
        return;
      case "viewers": q("viewer-count").textContent = d.count; return;
      case "reactions": showBurst(d); return;
      case "poll.results": renderPolls((root._polls || []).map(function (p) { return p.id === d.poll_id ? Object.assign(p, {results: d}) : p; })); return;
      case "ack": if (d.message) addChat(d.message, !!d.pending_review);
        if (d.held && q("question-form")) { var qn = q("question-note"); if (qn) qn.textContent = "Your question is waiting for a moderator's review."; } if (d.upvoted !== undefined) myUpvotes[d.question_id] = d.upvoted; return;
      case "error": var e = q("chat-error"); if (e) e.textContent = d.message + (d.details && d.details.retry_after ? " (" + d.details.retry_after + " s)" : ""); return;
      case "sys.lagged": case "sys.resync": resuming = true; send("resume", {last_seq: lastSeq || 0, chat_cseq: chatCseq}); return;
    }
    if (f.seq != null) roomEvent(f);
  }
  // The player reports provider errors (counted per stream by code; the message text is not kept).
  var video = root.querySelector("video[data-testid=player]");
  // HLS plays natively in Safari; elsewhere through hls.js (vendored, Media Source Extensions). No worker:
  // the site's CSP allows scripts from 'self' only.
  var src = video && video.dataset.src;  // set only for HLS, so no browser tries to play it unaided first
  if (src && video.canPlayType("application/vnd.apple.mpegurl")) video.src = src;
  else if (src && window.Hls && window.Hls.isSupported()) {
    var hls = new window.Hls({enableWorker: false});
    hls.on(window.Hls.Events.ERROR, function (event, data) {
      if (data.fatal) send("player.error", {code: ("hls_" + (data.details || data.type || "error")).slice(0, 40).replace(/[^A-Za-z0-9_.:-]/g, "_"), message: ""});
    });
    hls.loadSource(src);
    hls.attachMedia(video);
  }
  if (video) video.addEventListener("error", function () {
    var err = video.error;
    send("player.error", {code: "media_" + (err ? err.code : 0), message: err && err.message ? err.message.slice(0, 200) : ""});
  });
  function connect() {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var url = proto + location.host + "/ws/v1/streams/" + streamId + "/?surface=" + surface;
    resuming = !!(token && lastSeq !== null);
    if (token && lastSeq !== null) url += "&last_seq=" + lastSeq + "&chat_cseq=" + chatCseq + "&resume=" + encodeURIComponent(token);
    setConn("connecting"); ws = new WebSocket(url);
    ws.onmessage = function (ev) { try { onFrame(JSON.parse(ev.data)); } catch (err) { /* a bad frame is skipped */ } };
    ws.onclose = function (ev) {
      ws = null;
      if (ev.code === 4404 || ev.code === 4409 || ev.code === 4403) { setConn("closed"); return; }
      attempt += 1; setConn("reconnecting");
      setTimeout(connect, Math.min(30000, 500 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2));
    };
  }
  var form = q("chat-form");
  if (form) form.addEventListener("submit", function (ev) { ev.preventDefault(); var i = form.elements.body; if (i.value.trim()) { send("chat.send", {body: i.value}); i.value = ""; } });
  var qf = q("question-form");
  if (qf) qf.addEventListener("submit", function (ev) { ev.preventDefault(); var i = qf.elements.body; if (i.value.trim()) { send("question.ask", {body: i.value}); i.value = ""; } });
  var mod = q("moderation");
  if (mod) {
    mod.querySelector('[data-action="go-live"]').addEventListener("click", function () { send("stream.go_live", {}); });
    var ef = q("end-form");
    ef.addEventListener("submit", function (ev) { ev.preventDefault(); if (window.confirm("End the stream for everyone?")) send("stream.end", {recording_url: ef.elements.recording_url.value}); });
    mod.querySelector('[data-action="lockdown"]').addEventListener("click", function () { send("chat.lockdown", {on: true}); });
    mod.querySelector('[data-action="unlock"]').addEventListener("click", function () { send("chat.lockdown", {on: false}); });
    var sf = q("settings-form");
    sf.addEventListener("submit", function (ev) { ev.preventDefault(); var e = sf.elements;
      send("chat.settings", {slow_seconds: +e.slow_seconds.value || 0, follow_minutes: +e.follow_minutes.value || 0, members_only: e.members_only.checked,
        followers_only: e.followers_only.checked, emote_only: e.emote_only.checked, hold_all: e.hold_all.checked}); });
    var pf = q("poll-form");
    pf.addEventListener("submit", function (ev) { ev.preventDefault(); send("poll.open", {question: pf.elements.question.value, options: pf.elements.options.value.split(",").map(function (s) { return s.trim(); }).filter(Boolean)}); pf.reset(); });
  }
  connect();
})();
