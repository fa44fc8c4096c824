/* Shared by the exam pages (attempt, proctor board): a reconnecting socket for one exam route, the server
 * clock, and same-origin JSON requests with the CSRF token.
 *
 * The exam routes have their own small socket rather than static/aula/realtime.js: they have no `resume`
 * message (every reconnect gets a fresh snapshot, which is the whole state of an attempt or a board), so
 * the live-session client's gap/resume machinery would only produce `unknown_type` errors here.
 *
 * Time: the server is the only clock. ServerClock keeps `server time − performance.now()` from the sample
 * with the shortest round trip, so the countdown ignores a wrong or changed client wall clock (Date.now is
 * never used for it). performance.now() may stand still while a device sleeps; the pages resync when they
 * become visible, every minute, and whenever the wall clock and the monotonic clock drift apart.
 */
(function (global) {
  "use strict";

  // Server times are ISO 8601 with microseconds; keep milliseconds so every engine parses them.
  function parseTime(text) {
    if (!text) return NaN;
    return Date.parse(String(text).replace(/(\.\d{3})\d+/, "$1"));
  }

  function randomHex(bytes) {
    var a = new Uint8Array(bytes);
    global.crypto.getRandomValues(a);
    var out = "";
    for (var i = 0; i < a.length; i++) out += (a[i] < 16 ? "0" : "") + a[i].toString(16);
    return out;
  }

  // --- the server clock ---------------------------------------------------------------------------------
  var MAX_SAMPLES = 8;
  var UNTIMED_RTT = 5000;  // a sample without a round trip (a snapshot) loses to any timed one

  function ServerClock() {
    this.samples = [];
    this.base = null;        // server epoch ms minus performance.now() ms
    this._wall = Date.now();
    this._mono = global.performance.now();
  }

  // One observation: the server said `serverIso` in a reply to a request sent at `sentAt` (performance.now,
  // or null when the frame was not a reply) and received at `receivedAt`.
  ServerClock.prototype.sample = function (serverIso, sentAt, receivedAt) {
    var server = parseTime(serverIso);
    if (isNaN(server)) return;
    var timed = typeof sentAt === "number" && receivedAt >= sentAt;
    var rtt = timed ? receivedAt - sentAt : UNTIMED_RTT;
    var mid = timed ? (sentAt + receivedAt) / 2 : receivedAt;
    this.samples.push({base: server - mid, rtt: rtt});
    if (this.samples.length > MAX_SAMPLES) this.samples.shift();
    var best = this.samples[0];
    for (var i = 1; i < this.samples.length; i++) if (this.samples[i].rtt <= best.rtt) best = this.samples[i];
    this.base = best.base;
  };

  // Old samples may describe a monotonic clock that stood still (sleep): keep showing the last estimate,
  // but let the next sample win whatever its round trip.
  ServerClock.prototype.invalidate = function () { this.samples = []; };

  ServerClock.prototype.ready = function () { return this.base !== null; };

  ServerClock.prototype.now = function () {
    return this.base === null ? null : this.base + global.performance.now();
  };

  // True when the wall clock moved differently from the monotonic clock since the last call (sleep,
  // suspended tab, a clock change): the caller should resync. A constant skew never triggers it.
  ServerClock.prototype.jumped = function () {
    var wall = Date.now(), mono = global.performance.now();
    var drift = Math.abs((wall - this._wall) - (mono - this._mono));
    this._wall = wall;
    this._mono = mono;
    return drift > 2000;
  };

  // --- the socket ---------------------------------------------------------------------------------------
  // Close codes after which reconnecting is pointless (docs/protocol.md).
  var FINAL = {4401: "signed-out", 4403: "forbidden", 4404: "not-found"};

  function ExamSocket(path, handlers) {
    this.path = path;
    this.h = handlers || {};
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this._timer = null;
    var self = this;
    global.addEventListener("online", function () { if (!self.ws && !self.stopped) self._soon(0); });
    global.addEventListener("offline", function () { self.drop(); });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && !self.ws && !self.stopped) self._soon(0);
    });
    this._connect();
  }

  ExamSocket.FINAL = FINAL;

  ExamSocket.prototype._connect = function () {
    if (this.stopped) return;
    clearTimeout(this._timer);
    var self = this, ws;
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    try {
      ws = new WebSocket(proto + location.host + this.path);
    } catch (e) {
      this._soon();
      return;
    }
    this.ws = ws;
    if (this.h.onState) this.h.onState(this.attempt ? "reconnecting" : "connecting", {});
    ws.onmessage = function (ev) {
      if (self.ws !== ws) return;
      var received = global.performance.now(), frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (frame.type === "snapshot") self.attempt = 0;
      if (self.h.onFrame) self.h.onFrame(frame, received);
    };
    ws.onclose = function (ev) {
      if (self.ws !== ws) return;
      self._lost(ev.code);
    };
  };

  ExamSocket.prototype._lost = function (code) {
    this.ws = null;
    var final = FINAL[code];
    if (final) this.stopped = true;
    if (this.stopped) {
      clearTimeout(this._timer);
      if (this.h.onState) this.h.onState("closed", {code: code, reason: final || "stopped"});
      return;
    }
    if (this.h.onState) this.h.onState("reconnecting", {code: code, reason: code === 4429 ? "too-many" : null});
    this._soon();
  };

  // Exponential backoff with full jitter: 0.5 s, 1 s, 2 s … capped at 15 s (an exam cannot wait 30 s).
  ExamSocket.prototype._soon = function (delay) {
    var self = this;
    if (delay === undefined) {
      delay = Math.random() * Math.min(15000, 500 * Math.pow(2, this.attempt));
      this.attempt += 1;
    }
    clearTimeout(this._timer);
    this._timer = setTimeout(function () { if (!self.ws) self._connect(); }, delay);
  };

  ExamSocket.prototype.open = function () { return !!this.ws && this.ws.readyState === 1; };

  ExamSocket.prototype.send = function (message) {
    if (!this.open()) return false;
    try {
      this.ws.send(JSON.stringify(message));
      return true;
    } catch (e) {
      return false;
    }
  };

  // Abandon a socket that looks dead (offline, no answer) without waiting for a close handshake.
  ExamSocket.prototype.drop = function () {
    var ws = this.ws;
    if (!ws) return;
    ws.onmessage = ws.onclose = null;
    try { ws.close(); } catch (e) { /* already closing */ }
    this._lost(1006);
  };

  ExamSocket.prototype.reconnectNow = function () {
    if (this.stopped) return;
    if (this.ws) this.drop(); else this._soon(0);
  };

  ExamSocket.prototype.stop = function () {
    this.stopped = true;
    clearTimeout(this._timer);
    var ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = null;
      try { ws.close(1000); } catch (e) { /* already closing */ }
    }
  };

  // --- HTTP -----------------------------------------------------------------------------------------------
  function cookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return null;
  }

  // Resolves to {status, body} (body null when not JSON); rejects only when the network failed.
  function requestJSON(method, url, payload, csrf) {
    var headers = {"Accept": "application/json"};
    var init = {method: method, credentials: "same-origin", headers: headers, cache: "no-store"};
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = cookie("csrftoken") || csrf || "";
      init.body = JSON.stringify(payload || {});
    }
    return global.fetch(url, init).then(function (response) {
      return response.json().then(function (body) { return {status: response.status, body: body}; },
                                  function () { return {status: response.status, body: null}; });
    });
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  // 5400 s -> "1:30:00", 125 s -> "02:05".
  function formatSeconds(total) {
    total = Math.max(0, Math.ceil(total));
    var h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
    return h ? h + ":" + pad(m) + ":" + pad(s) : pad(m) + ":" + pad(s);
  }

  global.AulaExam = {
    parseTime: parseTime, randomHex: randomHex, ServerClock: ServerClock, ExamSocket: ExamSocket,
    requestJSON: requestJSON, formatSeconds: formatSeconds,
  };
})(window);
