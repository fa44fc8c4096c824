/* Aula real-time client: one socket per page, sequence tracking, resume, reconnect with backoff + jitter.
 *
 * Frames are {v, type, seq, ts, data}. Room events carry a per-room seq; when a frame arrives with a
 * seq beyond last+1 (a gap), or after any reconnect, the client asks the server to resume from the last
 * seq it saw and the server replays exactly the missed events (or sends a fresh snapshot).
 * See docs/protocol.md.
 */
(function (global) {
  "use strict";

  function AulaSocket(path, handlers) {
    this.path = path;
    this.h = handlers || {};
    this.lastSeq = null;      // highest contiguous seq applied
    this.attempt = 0;
    this.ws = null;
    this.closedByServer = null;
    this.pending = {};
    this.refCounter = 0;
    this.stopped = false;
    this._connect();
    var self = this;
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && (!self.ws || self.ws.readyState > 1)) self._connectSoon(0);
    });
  }

  // Close codes after which reconnecting is pointless (see docs/protocol.md).
  AulaSocket.FINAL = {4401: "signed-out", 4403: "forbidden", 4404: "not-found", 4408: "removed", 4409: "ended"};

  AulaSocket.prototype._url = function () {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    return proto + location.host + this.path;
  };

  AulaSocket.prototype._state = function (state, detail) {
    if (this.h.onState) this.h.onState(state, detail);
  };

  AulaSocket.prototype._connect = function () {
    var self = this;
    this._state(this.attempt ? "reconnecting" : "connecting");
    var ws = new WebSocket(this._url());
    this.ws = ws;
    ws.onopen = function () {
      self.attempt = 0;
      if (self.lastSeq !== null) self.send({type: "resume", last_seq: self.lastSeq});
    };
    ws.onmessage = function (ev) {
      var frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      self._frame(frame);
    };
    ws.onclose = function (ev) {
      if (self.ws !== ws) return;
      var final = AulaSocket.FINAL[ev.code];
      if (final || self.stopped) {
        self._state("closed", {code: ev.code, reason: final || "stopped"});
        return;
      }
      self._state("reconnecting", {code: ev.code});
      self._connectSoon();
    };
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
    this._timer = setTimeout(function () { self._connect(); }, delay);
  };

  AulaSocket.prototype._frame = function (frame) {
    var t = frame.type;
    if (t === "ack" || t === "error") {
      var ref = frame.data && frame.data.ref;
      var cb = ref && this.pending[ref];
      if (cb) { delete this.pending[ref]; cb(t === "error" ? frame.data : null, frame.data); }
      if (t === "error" && this.h.onError && !cb) this.h.onError(frame.data);
      return;
    }
    if (t === "sys.resync" || t === "sys.lagged") {
      if (this.lastSeq !== null) this.send({type: "resume", last_seq: this.lastSeq});
      return;
    }
    if (t === "snapshot") {
      this.lastSeq = frame.data.last_seq;
      if (this.h.onSnapshot) this.h.onSnapshot(frame.data);
      this._state("live");
      return;
    }
    if (frame.seq !== null && frame.seq !== undefined) {
      if (this.lastSeq !== null && frame.seq <= this.lastSeq) return;  // duplicate after resume
      if (this.lastSeq !== null && frame.seq > this.lastSeq + 1) {
        // Gap: something was missed. Ask for exactly what is missing; apply nothing out of order.
        if (!this._resuming) { this._resuming = true; this.send({type: "resume", last_seq: this.lastSeq}); }
        return;
      }
      this.lastSeq = frame.seq;
      this._resuming = false;
    }
    if (t === "resume.done") { this._resuming = false; this._state("live"); return; }
    if (this.h.onEvent) this.h.onEvent(frame);
  };

  AulaSocket.prototype.send = function (msg, callback) {
    if (!this.ws || this.ws.readyState !== 1) { if (callback) callback({code: "offline", message: "Not connected."}); return false; }
    if (callback) { msg.ref = "r" + (++this.refCounter); this.pending[msg.ref] = callback; }
    this.ws.send(JSON.stringify(msg));
    return true;
  };

  AulaSocket.prototype.close = function () { this.stopped = true; if (this.ws) this.ws.close(1000); };

  global.AulaSocket = AulaSocket;
})(window);
