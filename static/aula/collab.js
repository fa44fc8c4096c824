/* Aula collaboration client: the session's whiteboard and notes as Yjs documents kept in step with the server
 * over /ws/v1/sessions/<id>/collab/ (docs/collab.md).
 *
 * Local edits are sent as merged updates at most every SEND_EVERY_MS and acknowledged once stored. On every
 * (re)connect and every `check_seconds`, each document is synced both ways with state vectors: what the client
 * lacks comes back, what the server lacks (offline edits, an unacknowledged send) goes up. When the server
 * refuses an edit (locked, not yours, malformed) the document is replaced by the server's copy and the user is
 * told: the screen never shows work the class does not have.
 */
(function (global) {
  "use strict";

  var Y = global.AulaCollab.Y;
  var SEND_EVERY_MS = 50;
  var MAX_IN_FLIGHT = 4;              // updates commute: a few travel at once instead of one per round trip
  var AWARENESS_EVERY_MS = 66;        // ≤ 15 cursor updates a second from one tab
  var AWARENESS_HEARTBEAT_MS = 20000; // an idle cursor is re-announced (the server forgets after 60 s)
  var AWARENESS_TTL_MS = 60000;
  var REMOTE = {remote: true};        // transaction origin of what came from the server
  var RESET_CODES = {locked: 1, forbidden: 1, invalid_update: 1, too_large: 1, consent_required: 1};

  function b64encode(bytes) {
    var out = "";
    for (var i = 0; i < bytes.length; i += 0x8000) {
      out += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return global.btoa(out);
  }

  function b64decode(text) {
    var bin = global.atob(text || "");
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }

  function Emitter() { this._on = {}; }
  Emitter.prototype.on = function (name, fn) { (this._on[name] = this._on[name] || []).push(fn); return this; };
  Emitter.prototype.emit = function (name) {
    var args = Array.prototype.slice.call(arguments, 1);
    (this._on[name] || []).slice().forEach(function (fn) {
      try { fn.apply(null, args); } catch (e) { if (global.console) global.console.error(e); }
    });
  };

  // --- awareness (cursors, selections, the presenter's view) ----------------------------------------------
  function Awareness(handle) {
    this.handle = handle;
    this.local = null;
    this.remote = {};      // user_id -> {state, at}
    this._lastSent = 0;
    this._timer = null;
    this._heartbeat = null;
  }

  Awareness.prototype.setLocal = function (state) {
    this.local = state;
    var self = this;
    var wait = AWARENESS_EVERY_MS - (Date.now() - this._lastSent);
    if (this._timer) return;
    this._timer = setTimeout(function () { self._timer = null; self._send(); }, Math.max(0, wait));
  };

  Awareness.prototype._send = function () {
    var client = this.handle.client;
    if (!client.live) return;
    this._lastSent = Date.now();
    client.socket.send({type: "awareness", doc: this.handle.kind, state: this.local});
    var self = this;
    clearTimeout(this._heartbeat);
    if (this.local) this._heartbeat = setTimeout(function () { self._send(); }, AWARENESS_HEARTBEAT_MS);
  };

  Awareness.prototype._apply = function (states, gone) {
    var now = Date.now();
    var me = this.handle.client.me && this.handle.client.me.user_id;
    var self = this;
    Object.keys(states || {}).forEach(function (uid) {
      if (String(uid) === String(me)) return;
      self.remote[uid] = {state: states[uid], at: now};
    });
    (gone || []).forEach(function (uid) { delete self.remote[uid]; });
    this.handle.emit("awareness", this.states());
  };

  Awareness.prototype.states = function () {
    var out = {};
    var horizon = Date.now() - AWARENESS_TTL_MS;
    var remote = this.remote;
    Object.keys(remote).forEach(function (uid) {
      if (remote[uid].at >= horizon) out[uid] = remote[uid].state;
    });
    return out;
  };

  // --- one shared document -------------------------------------------------------------------------------
  function DocHandle(client, kind) {
    Emitter.call(this);
    this.client = client;
    this.kind = kind;
    this.LOCAL = {local: kind};
    this.ready = false;
    this.edit = {allowed: false, reason: "Connecting…"};
    this.awareness = new Awareness(this);
    this._outbox = [];
    this._inflight = 0;
    this._sendTimer = null;
    this._syncing = false;
    this._newDoc();
  }
  DocHandle.prototype = Object.create(Emitter.prototype);

  DocHandle.prototype._newDoc = function () {
    var self = this;
    this.ydoc = new Y.Doc();
    this.ydoc.on("update", function (update, origin) {
      if (origin === REMOTE) return;
      self._outbox.push(update);
      self._scheduleSend();
    });
  };

  DocHandle.prototype.canEdit = function () { return !!this.edit.allowed; };

  DocHandle.prototype._scheduleSend = function () {
    var self = this;
    if (this._sendTimer) return;
    this._sendTimer = setTimeout(function () { self._sendTimer = null; self._send(); }, SEND_EVERY_MS);
  };

  DocHandle.prototype._send = function () {
    if (this._inflight >= MAX_IN_FLIGHT || !this._outbox.length || !this.client.live || !this.ready) return;
    var update = this._outbox.length === 1 ? this._outbox[0] : Y.mergeUpdates(this._outbox);
    this._outbox = [];
    this._inflight += 1;
    var self = this;
    var doc = this.ydoc;
    this.client.socket.send({type: "update", doc: this.kind, update: b64encode(update)}, function (err) {
      self._inflight -= 1;
      if (doc !== self.ydoc) return;  // answered after a reset: that document is gone
      if (!err) {
        self.emit("saved");
        if (self._outbox.length) self._scheduleSend();
        return;
      }
      self._refused(err, update);
    });
  };

  DocHandle.prototype._refused = function (err, update) {
    if (RESET_CODES[err.code]) {
      this.client._notice({doc: this.kind, code: err.code, message: err.message});
      this.reset();
      return;
    }
    // Offline, restarting, rate limited: keep it; it goes again (and the next sync carries it anyway).
    if (update) this._outbox.unshift(update);
    var self = this;
    var wait = ((err.details && err.details.retry_after) || 1) * 1000;
    setTimeout(function () { self._scheduleSend(); }, wait);
  };

  /* Drop local state and take the server's copy (after a refused edit). */
  DocHandle.prototype.reset = function () {
    var old = this.ydoc;
    if (!old) return;
    this._outbox = [];
    this.ready = false;
    this._newDoc();
    this.emit("reset", this.ydoc);
    old.destroy();
    this.sync();
  };

  /* Both ways: the server sends what we lack and its state vector; we send what it lacks. */
  DocHandle.prototype.sync = function () {
    if (!this.client.live || this._syncing) return;
    this._syncing = true;
    var self = this;
    var doc = this.ydoc;
    this.client.socket.send({type: "sync", doc: this.kind, sv: b64encode(Y.encodeStateVector(doc))},
      function (err, data) {
        self._syncing = false;
        if (err) {
          if (RESET_CODES[err.code]) { self._refused(err, null); }
          return;
        }
        if (doc !== self.ydoc) return;  // reset meanwhile
        Y.applyUpdate(doc, b64decode(data.update), REMOTE);
        var missing = Y.encodeStateAsUpdate(doc, b64decode(data.sv));
        var ours = Y.decodeUpdate(missing);
        if (ours.structs.length || ours.ds.clients.size) {
          self._outbox.unshift(missing);  // offline edits, or a send the server never stored
        }
        var first = !self.ready;
        self.ready = true;
        if (first) self.emit("ready");
        self._scheduleSend();
      });
  };

  // --- the client: one socket for both documents -----------------------------------------------------------
  function AulaCollabClient(options) {
    Emitter.call(this);
    this.options = options || {};
    this.me = null;
    this.people = {};
    this.clients = {};
    this.live = false;
    this.docs = {board: new DocHandle(this, "board"), notes: new DocHandle(this, "notes")};
    var self = this;
    this.socket = new global.AulaSocket("/ws/v1/sessions/" + this.options.sessionId + "/collab/", {
      onState: function (state, detail) {
        if (state !== "live") self.live = false;
        if (self.options.onStatus) self.options.onStatus(state, detail);
        self.emit("status", state, detail);
      },
      onSnapshot: function (data) { self._snapshot(data); },
      onResumed: function () { self._syncAll(); },
      onEvent: function (frame) { self._event(frame); },
      onError: function (data) { if (data.code) self._notice({doc: null, code: data.code, message: data.message}); },
    });
    this._checker = null;
  }
  AulaCollabClient.prototype = Object.create(Emitter.prototype);

  AulaCollabClient.prototype.doc = function (kind) { return this.docs[kind]; };

  AulaCollabClient.prototype._notice = function (notice) {
    if (this.options.onNotice) this.options.onNotice(notice);
    this.emit("notice", notice);
  };

  AulaCollabClient.prototype._people = function (people, clients) {
    var self = this;
    Object.keys(people || {}).forEach(function (uid) { self.people[uid] = people[uid]; });
    Object.keys(clients || {}).forEach(function (cid) { self.clients[cid] = clients[cid]; });
    this.emit("people", this.people);
  };

  AulaCollabClient.prototype._snapshot = function (data) {
    this.me = data.me;
    this.people[data.me.user_id] = {name: data.me.name, color: data.me.color, role: data.me.role};
    var clients = {};
    Object.keys(data.clients || {}).forEach(function (kind) {
      Object.keys(data.clients[kind]).forEach(function (cid) { clients[cid] = data.clients[kind][cid]; });
    });
    this._people(data.people, clients);
    this.live = true;
    var self = this;
    Object.keys(this.docs).forEach(function (kind) {
      var handle = self.docs[kind];
      var info = (data.docs || {})[kind];
      if (info) {
        handle.edit = info.edit;
        handle.emit("edit", handle.edit);
      }
      handle.awareness.remote = {};
      handle.awareness._apply((data.awareness || {})[kind] || {}, []);
      if (handle.awareness.local) handle.awareness._send();
    });
    this._syncAll();
    clearInterval(this._checker);
    var every = ((data.limits && data.limits.check_seconds) || 30) * 1000;
    this._checker = setInterval(function () { self._syncAll(); }, every);
  };

  AulaCollabClient.prototype._syncAll = function () {
    var docs = this.docs;
    Object.keys(docs).forEach(function (kind) { docs[kind].sync(); });
  };

  AulaCollabClient.prototype._event = function (frame) {
    var data = frame.data || {};
    var handle = data.doc ? this.docs[data.doc] : null;
    switch (frame.type) {
      case "update":
        if (handle) Y.applyUpdate(handle.ydoc, b64decode(data.update), REMOTE);
        break;
      case "awareness":
        if (handle) handle.awareness._apply(data.states, data.gone);
        break;
      case "clients":
        this._people(data.people, data.clients);
        break;
      case "edit":
        if (handle) {
          handle.edit = {allowed: data.allowed, reason: data.reason};
          handle.emit("edit", handle.edit);
        }
        break;
      case "notice":
        this._notice(data);
        break;
    }
  };

  AulaCollabClient.prototype.close = function () {
    clearInterval(this._checker);
    this.socket.close();
  };

  global.AulaCollabClient = AulaCollabClient;
  global.AulaCollabCodec = {encode: b64encode, decode: b64decode};
})(window);
