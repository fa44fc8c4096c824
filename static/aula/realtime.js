/* Aula real-time client: one socket per page, sequence tracking, resume, reconnect with backoff + jitter.
 *
 * Frames are {v, type, seq, ts, data}. Room events carry a per-room seq. The client applies them strictly in
 * order: a frame whose seq is beyond last+1 (a gap) is dropped and the client asks the server to `resume`
 * from the last seq it applied. After a lost connection it reconnects with `?last_seq=<n>&resume=<token>`
 * in the URL, and the server replays exactly the missed events followed by `resume.done` (or sends a fresh
 * `snapshot` when the gap is too old). The state is "live" only after a snapshot or a `resume.done`.
 * See docs/protocol.md.
 */
(function (global) {
  "use strict";

  // Keep-alive and clock sampling. A socket that has not answered the previous ping within a whole interval
  // is half-open (a phone that changed networks, a laptop that slept): drop it and reconnect.
  var PING_EVERY_MS = 20000;
  var CLOCK_SAMPLES = 5;

  function randomHex(bytes) {
    var a = new Uint8Array(bytes);
    global.crypto.getRandomValues(a);
    var out = "";
    for (var i = 0; i < a.length; i++) out += (a[i] < 16 ? "0" : "") + a[i].toString(16);
    return out;
  }

  // RFC 4122 version 4; crypto.randomUUID exists only in secure contexts (not on http:// LAN addresses).
  function uuid4() {
    var a = new Uint8Array(16);
    global.crypto.getRandomValues(a);
    a[6] = (a[6] & 0x0f) | 0x40;
    a[8] = (a[8] & 0x3f) | 0x80;
    var hex = "";
    for (var i = 0; i < 16; i++) hex += (a[i] < 16 ? "0" : "") + a[i].toString(16);
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" +
      hex.slice(20);
  }

  // Server times are ISO 8601 with microseconds; keep milliseconds so every engine parses them.
  function parseTime(text) {
    if (!text) return NaN;
    return Date.parse(String(text).replace(/(\.\d{3})\d+/, "$1"));
  }

  // References must be unique across page loads: the server uses a chat message's ref to drop retries.
  var PAGE_ID = randomHex(6);
  var refCounter = 0;
  function newRef() { refCounter += 1; return PAGE_ID + "-" + refCounter; }

  function AulaSocket(path, handlers) {
    this.path = path;
    this.h = handlers || {};
    this.lastSeq = null;        // highest contiguous seq applied
    this.resumeToken = null;    // from the last snapshot / resume.done; lets a reconnect replay what it missed
    this.attempt = 0;
    this.ws = null;
    this.state = null;
    this.everLive = false;
    this.pending = {};
    this.stopped = false;
    this.clockOffset = 0;       // server clock minus client clock, in ms
    this._clock = [];           // recent {rtt, offset} samples; the lowest round trip wins
    this._pings = {};
    this._resuming = false;
    this._timer = null;
    this._pinger = null;
    this.latencySample = false; // the server asked this socket to acknowledge live events (sys.sample)
    this._lastLatencyAck = 0;
    var self = this;
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && !self.ws && !self.stopped) self._connectSoon(0);
    });
    global.addEventListener("online", function () { if (!self.ws && !self.stopped) self._connectSoon(0); });
    global.addEventListener("offline", function () { if (self.ws) self._drop(); });
    this._connect();
  }

  AulaSocket.uuid4 = uuid4;
  AulaSocket.newRef = newRef;
  AulaSocket.parseTime = parseTime;

  // Close codes after which reconnecting is pointless (see docs/protocol.md).
  AulaSocket.FINAL = {4401: "signed-out", 4403: "forbidden", 4404: "not-found", 4408: "removed", 4409: "ended"};

  AulaSocket.prototype._url = function () {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    var url = proto + location.host + this.path;
    if (this.lastSeq !== null && this.resumeToken) {
      url += "?last_seq=" + encodeURIComponent(this.lastSeq) + "&resume=" + encodeURIComponent(this.resumeToken);
    }
    return url;
  };

  AulaSocket.prototype._state = function (state, detail) {
    this.state = state;
    if (this.h.onState) this.h.onState(state, detail || {});
  };

  AulaSocket.prototype.now = function () { return Date.now() + this.clockOffset; };

  AulaSocket.prototype._connect = function () {
    if (this.stopped) return;
    clearTimeout(this._timer);
    var self = this;
    this._state(this.everLive ? "reconnecting" : "connecting");
    var ws;
    try {
      ws = new WebSocket(this._url());
    } catch (e) {
      this._connectSoon();
      return;
    }
    this.ws = ws;
    this._resuming = false;
    ws.onopen = function () {
      if (self.ws !== ws) return;
      self._awaitingAnswer = false;
      self._startPinger();
    };
    ws.onmessage = function (ev) {
      if (self.ws !== ws) return;
      self._awaitingAnswer = false;  // any frame proves the connection is alive
      var frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      self._frame(frame);
    };
    ws.onclose = function (ev) {
      if (self.ws !== ws) return;
      self._lost(ev.code);
    };
  };

  // The connection is gone (closed by either side, or dropped by us as dead).
  AulaSocket.prototype._lost = function (code) {
    this.ws = null;
    this._stopPinger();
    var pending = this.pending;
    this.pending = {};
    Object.keys(pending).forEach(function (ref) {
      pending[ref]({code: "disconnected", message: "The connection dropped before the server answered."}, null);
    });
    var final = AulaSocket.FINAL[code];
    if (final || this.stopped) {
      this.stopped = true;  // nothing (tab shown again, network back) reconnects after a final close
      clearTimeout(this._timer);
      this._state("closed", {code: code, reason: final || "stopped"});
      return;
    }
    this._state(this.everLive ? "reconnecting" : "connecting",
                {code: code, reason: code === 4429 ? "too-many-connections" : null});
    this._connectSoon();
  };

  // Abandon a socket that looks dead (offline, silent) without waiting for a close handshake that may never come.
  AulaSocket.prototype._drop = function () {
    var ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try { ws.close(); } catch (e) { /* already closing */ }
    this._lost(1006);
  };

  AulaSocket.prototype._connectSoon = function (delay) {
    var self = this;
    if (delay === undefined) {
      // Exponential backoff with full jitter: 0.5 s, 1 s, 2 s … capped at 30 s.
      var cap = Math.min(30000, 500 * Math.pow(2, this.attempt));
      delay = Math.random() * cap;
      this.attempt += 1;
    }
    clearTimeout(this._timer);
    this._timer = setTimeout(function () { if (!self.ws) self._connect(); }, delay);
  };

  AulaSocket.prototype._startPinger = function () {
    var self = this;
    this._stopPinger();
    this._pinger = setInterval(function () {
      if (!self.ws || self.ws.readyState !== 1) return;
      if (self._awaitingAnswer) { self._drop(); return; }
      self._awaitingAnswer = true;
      self.ping();
    }, PING_EVERY_MS);
  };

  AulaSocket.prototype._stopPinger = function () {
    clearInterval(this._pinger);
    this._pinger = null;
    this._pings = {};
  };

  // Measure the clock offset from a round trip (NTP-style midpoint), never trusting the raw client clock.
  AulaSocket.prototype.ping = function () {
    if (!this.ws || this.ws.readyState !== 1) return;
    var ref = newRef();
    this._pings[ref] = Date.now();
    this.ws.send(JSON.stringify({type: "ping", ref: ref}));
  };

  AulaSocket.prototype._pong = function (data) {
    var sent = this._pings[data.ref];
    if (sent === undefined) return;
    delete this._pings[data.ref];
    var received = Date.now();
    var server = parseTime(data.server_time);
    if (isNaN(server)) return;
    var rtt = received - sent;
    this._clock.push({rtt: rtt, offset: server + rtt / 2 - received});
    if (this._clock.length > CLOCK_SAMPLES) this._clock.shift();
    var best = this._clock.reduce(function (a, b) { return b.rtt < a.rtt ? b : a; });
    this.clockOffset = best.offset;
    if (this.h.onClock) this.h.onClock(this.clockOffset);
  };

  AulaSocket.prototype._roughClock = function (serverTime) {
    if (this._clock.length) return;  // a measured round trip is better than a one-way guess
    var server = parseTime(serverTime);
    if (!isNaN(server)) this.clockOffset = server - Date.now();
  };

  AulaSocket.prototype._live = function () {
    this.attempt = 0;
    this._resuming = false;
    var resumed = this.everLive;
    this.everLive = true;
    this._state("live", {resumed: resumed});
    this.ping();
  };

  AulaSocket.prototype._resume = function () {
    if (this._resuming || this.lastSeq === null) return;
    this._resuming = true;
    var self = this;
    this.send({type: "resume", last_seq: this.lastSeq}, function (err) {
      if (!err) return;  // the replay and resume.done follow
      self._resuming = false;
      if (err.code === "disconnected") return;  // the reconnect resumes through its URL
      var wait = (err.details && err.details.retry_after ? err.details.retry_after : 1) * 1000;
      setTimeout(function () { self._resume(); }, wait);
    });
  };

  AulaSocket.prototype._frame = function (frame) {
    var t = frame.type;
    var data = frame.data || {};
    if (t === "pong") { this._pong(data); return; }
    var noSeq = frame.seq === null || frame.seq === undefined;
    if (noSeq && data.ref && (t === "ack" || t === "error" || this.pending[data.ref])) {
      var cb = this.pending[data.ref];
      if (cb) {
        delete this.pending[data.ref];
        cb(t === "error" ? data : null, data);
        return;
      }
    }
    if (t === "ack") return;
    if (t === "error") { if (this.h.onError) this.h.onError(data); return; }
    if (t === "sys.resync" || t === "sys.lagged") { this._resume(); return; }
    if (t === "sys.sample") { this.latencySample = !!data.latency; return; }
    if (t === "snapshot") {
      this.lastSeq = data.last_seq;
      this.resumeToken = data.resume_token || null;
      this._roughClock(data.server_time);
      if (this.h.onSnapshot) this.h.onSnapshot(data);
      this._live();
      return;
    }
    if (t === "resume.done") {
      if (data.resume_token) this.resumeToken = data.resume_token;
      this._roughClock(data.server_time);
      if (this.h.onResumed) this.h.onResumed(data);
      this._live();
      return;
    }
    if (!noSeq) {
      if (this.lastSeq === null) return;            // nothing is applied before the first snapshot
      if (frame.seq <= this.lastSeq) return;        // already applied (a broadcast that raced a replay)
      if (frame.seq > this.lastSeq + 1) { this._resume(); return; }  // a gap: fetch exactly what is missing
      this.lastSeq = frame.seq;
      this._latencyAck(frame);
    }
    if (this.h.onEvent) this.h.onEvent(frame);
  };

  /* Delivery latency (docs/observability.md): a sampled socket answers a stored event it received live with
   * its seq and server stamp, at most one a second; never for replayed events (resume) or the snapshot. */
  AulaSocket.prototype._latencyAck = function (frame) {
    if (!this.latencySample || this.state !== "live" || this._resuming || !frame.ts) return;
    var now = Date.now();
    if (now - this._lastLatencyAck < 1000) return;
    this._lastLatencyAck = now;
    this.send({type: "latency.ack", seq: frame.seq, ts: frame.ts});
  };

  /* Send a message. With a callback, a `ref` is added (unless the message has one) and the callback gets
   * (error, data) from the server's reply, or a `disconnected` error if the socket drops first. */
  AulaSocket.prototype.send = function (msg, callback) {
    if (!this.ws || this.ws.readyState !== 1) {
      if (callback) callback({code: "offline", message: "Not connected."}, null);
      return false;
    }
    if (callback) {
      if (!msg.ref) msg.ref = newRef();
      this.pending[msg.ref] = callback;
    }
    this.ws.send(JSON.stringify(msg));
    return true;
  };

  AulaSocket.prototype.isOpen = function () { return !!this.ws && this.ws.readyState === 1; };

  AulaSocket.prototype.close = function () {
    this.stopped = true;
    clearTimeout(this._timer);
    if (this.ws) this.ws.close(1000);
  };

  global.AulaSocket = AulaSocket;
})(window);
