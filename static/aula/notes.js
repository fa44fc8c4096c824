/* The session's shared notes: a Quill editor bound to the Y.Text `body` of the notes document (docs/collab.md),
 * with the others' cursors and selections, an authorship view and the history slider.
 *
 * The y-quill binding is made without y-protocols awareness: Aula's awareness goes over the collab socket
 * (collab.js), so cursors are sent here as Yjs relative positions (they stay on the same characters while
 * others type) and drawn with quill-cursors. Authorship is read from the Yjs items themselves (which replica
 * wrote each run of text, and the server's verified replica → person map); it is shown in a read-only view and
 * never written into the shared document.
 */
(function (global) {
  "use strict";

  // The schema's formats (docs/collab.md): anything else pasted in is dropped by Quill, never stored.
  var FORMATS = ["header", "bold", "italic", "underline", "strike", "list", "link", "code-block", "blockquote"];
  var COLOR_RE = /^#[0-9a-f]{6}$/i;
  var UNKNOWN_COLOR = "#8a929c";
  var NOTICE_MS = 9000;
  var NOTICE_TEXT = {
    locked: "Your last change was not added: the notes are locked for you.",
    forbidden: "Your last change was not added: it changed something that is not yours to change.",
    invalid_update: "Your last change was not added: the server could not read it.",
    too_large: "Your last change was not added: it was too large. Try a smaller change.",
    consent_required: "Your last change was not added: a parent's consent is needed before you can write.",
    masked: "Part of your text was hidden by the class's word rules."
  };

  function color(v) { return typeof v === "string" && COLOR_RE.test(v) ? v : UNKNOWN_COLOR; }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    if (text != null) node.textContent = text;
    return node;
  }

  /* Runs of visible text with the Yjs replica (clientID) that wrote them, in document order. */
  function textRuns(ytext) {
    var runs = [];
    for (var item = ytext._start; item !== null; item = item.right) {
      if (item.deleted || !item.countable) continue;  // formatting marks take no room in the text
      var content = item.content;
      var text = typeof content.str === "string" ? content.str : "\uFFFC";
      var last = runs[runs.length - 1];
      if (last && last.client === item.id.client) last.text += text;
      else runs.push({client: item.id.client, text: text});
    }
    return runs;
  }

  function Notes(root, client) {
    var AC = global.AulaCollab;
    this.Y = AC.Y;
    this.root = root;
    this.client = client;
    this.h = client.doc("notes");
    this.editState = root.querySelector("[data-testid=notes-edit-state]");
    this.noticeEl = root.querySelector("[data-testid=notes-notice]");
    this.editorWrap = root.querySelector(".notes-editor-wrap");
    this.toolbar = root.querySelector(".notes-toolbar");
    this.authorship = root.querySelector(".notes-authorship");
    this.authorshipText = root.querySelector(".notes-authorship-text");
    this.legend = root.querySelector(".notes-legend");
    this.historyEl = root.querySelector(".notes-history");
    this.authorshipButton = root.querySelector("[data-action=authorship]");
    this.historyButton = root.querySelector("[data-action=history]");

    this.quill = new AC.Quill(root.querySelector(".notes-editor"), {
      theme: "snow",
      formats: FORMATS,
      readOnly: true,
      placeholder: "Shared notes: everyone in the class sees what is written here.",
      modules: {
        toolbar: {container: this.toolbar},
        // Positions come from the Yjs relative positions on every change (_drawCursors); quill-cursors' own
        // transform runs later (in a timeout) and would shift them a second time.
        cursors: {hideDelayMs: 2500, transformOnTextChange: false},
        history: {userOnly: true}  // undo takes back only one's own typing, never a classmate's
      }
    });
    this.quill.root.setAttribute("aria-labelledby", "notes-heading");
    this.quill.root.setAttribute("data-testid", "notes-text");
    this.cursors = this.quill.getModule("cursors");
    this.binding = null;
    this.ytext = null;
    this.history = null;
    this.showingAuthorship = false;
    this._sentRange = undefined;
    this._where = {};       // user id -> the range last drawn for them
    this._frame = 0;

    var self = this;
    this._onText = function () { self._schedule(); };
    this.quill.on("editor-change", function () { self._sendRange(); });
    this._bind(this.h.ydoc);
    this.h.on("reset", function (ydoc) { self._bind(ydoc); });
    this.h.on("ready", function () { self._applyEdit(); });
    this.h.on("edit", function () { self._applyEdit(); });
    this.h.on("awareness", function () { self._drawCursors(); });
    client.on("people", function () { self._drawCursors(); if (self.showingAuthorship) self._renderAuthorship(); });
    client.on("notice", function (n) { if (!n.doc || n.doc === "notes") self.notice(n); });
    client.on("status", function (state) { self._status(state); });
    this.authorshipButton.addEventListener("click", function () { self.setAuthorship(!self.showingAuthorship); });
    this.historyButton.hidden = !global.AulaCollabHistory;
    this.historyButton.addEventListener("click", function () { self.openHistory(); });
    this._applyEdit();
  }

  /* Bind the editor to a (new) document: at start, and after a reset replaced the refused local copy. */
  Notes.prototype._bind = function (ydoc) {
    if (this.binding) this.binding.destroy();
    if (this.ytext) this.ytext.unobserve(this._onText);
    this.ytext = ydoc.getText("body");
    this.binding = new global.AulaCollab.QuillBinding(this.ytext, this.quill);
    this.quill.history.clear();  // the undo stack held edits of the document just thrown away
    this.ytext.observe(this._onText);
    this._sentRange = undefined;
    this._sendRange();
    this._schedule();
    this._applyEdit();
  };

  // --- edit permission, notices, connection ---------------------------------------------------------------
  Notes.prototype.editable = function () {
    return this.h.canEdit() && this.h.ready && !this.history && !this.showingAuthorship;
  };

  Notes.prototype._applyEdit = function () {
    var allowed = this.h.canEdit();
    var reason = (this.h.edit && this.h.edit.reason) || "";
    var editable = this.editable();
    this.quill.enable(editable);
    this.toolbar.querySelectorAll("button, select, .ql-picker-label").forEach(function (b) {
      if ("disabled" in b) b.disabled = !editable;
      else b.setAttribute("aria-disabled", editable ? "false" : "true");
    });
    this.root.classList.toggle("notes-readonly", !allowed);
    this.editState.dataset.allowed = allowed ? "true" : "false";
    if (allowed) {
      this.editState.textContent = this.h.ready ? "You can write." : "Loading the notes…";
    } else {
      this.editState.textContent = this.client.me
        ? "Read-only: " + (reason || "the notes are locked.") : (reason || "Connecting…");
    }
  };

  Notes.prototype.notice = function (n) {
    var text = (n.code && NOTICE_TEXT[n.code]) || n.message || "Your last change was not added.";
    if (n.code && NOTICE_TEXT[n.code] && n.message && n.code !== "masked") text += " (" + n.message + ")";
    var box = this.noticeEl;
    box.textContent = text;
    box.dataset.code = n.code || "";
    box.hidden = false;
    clearTimeout(this._noticeTimer);
    this._noticeTimer = setTimeout(function () { box.hidden = true; }, NOTICE_MS);
  };

  Notes.prototype._status = function (state) {
    this.root.dataset.connection = state;
    if (state === "live") { this._applyEdit(); return; }
    if (state === "reconnecting" && this.h.canEdit()) {
      this.editState.textContent = "Offline: what you write is sent when the connection is back.";
    }
  };

  // --- cursors ---------------------------------------------------------------------------------------------
  Notes.prototype._relative = function (index) {
    var Y = this.Y;
    return JSON.stringify(Y.relativePositionToJSON(Y.createRelativePositionFromTypeIndex(this.ytext, index)));
  };

  Notes.prototype._absolute = function (encoded) {
    var Y = this.Y;
    try {
      var pos = Y.createAbsolutePositionFromRelativePosition(
        Y.createRelativePositionFromJSON(JSON.parse(encoded)), this.ytext.doc);
      return pos && pos.type === this.ytext ? pos.index : null;  // null: text we have not received yet
    } catch (e) {
      return null;
    }
  };

  /* Our selection, as positions tied to characters; sent only when it really moved. */
  Notes.prototype._sendRange = function () {
    if (!this.ytext) return;
    var sel = this.quill.getSelection();
    var range = sel ? {anchor: this._relative(sel.index), head: this._relative(sel.index + sel.length)} : null;
    var key = JSON.stringify(range);
    if (key === this._sentRange) return;
    this._sentRange = key;
    this.h.awareness.setLocal({client: this.h.ydoc.clientID, range: range});
  };

  Notes.prototype._drawCursors = function () {
    var states = this.h.awareness.states();
    var people = this.client.people;
    var max = Math.max(0, this.quill.getLength() - 1);
    var seen = {};
    var self = this;
    Object.keys(states).forEach(function (uid) {
      var state = states[uid];
      if (!state || !state.range || typeof state.range.anchor !== "string") return;
      var a = self._absolute(state.range.anchor);
      var b = self._absolute(state.range.head);
      if (a === null || b === null) return;
      a = Math.min(a, max);
      b = Math.min(b, max);
      var person = people[uid] || {};
      var id = String(uid);
      seen[id] = true;
      self.cursors.createCursor(id, person.name || state.name || "Someone", color(person.color || state.color));
      var range = {index: Math.min(a, b), length: Math.abs(b - a)};
      self.cursors.moveCursor(id, range);
      var where = state.range.anchor + " " + state.range.head;
      if (self._where[id] !== where) {
        // The name shows while the person moves and fades after the cursors' hide delay (as on hover).
        self._where[id] = where;
        self.cursors.toggleFlag(id, true);
        setTimeout(function () { self.cursors.toggleFlag(id, false); }, 50);
      }
      var node = self.quill.container.querySelector("#ql-cursor-" + id);
      if (node && !node.dataset.userId) {
        node.dataset.testid = "notes-cursor";
        node.dataset.userId = id;
      }
    });
    this.cursors.cursors().forEach(function (cursor) {
      if (!seen[cursor.id]) { self.cursors.removeCursor(cursor.id); delete self._where[cursor.id]; }
    });
  };

  /* Text changes move the others' cursors and the authorship colours: redrawn once per frame. */
  Notes.prototype._schedule = function () {
    if (this._frame) return;
    var self = this;
    this._frame = global.requestAnimationFrame(function () {
      self._frame = 0;
      self._drawCursors();
      if (self.showingAuthorship) self._renderAuthorship();
    });
  };

  // --- authorship ------------------------------------------------------------------------------------------
  Notes.prototype._authorOf = function (clientID) {
    var uid = this.client.clients[clientID];
    if (uid == null && clientID === this.h.ydoc.clientID && this.client.me) uid = this.client.me.user_id;
    return uid == null ? null : String(uid);
  };

  Notes.prototype._renderAuthorship = function () {
    var self = this, people = this.client.people;
    var counts = {}, order = [];
    var out = document.createDocumentFragment();
    var runs = textRuns(this.ytext);
    var merged = [];
    runs.forEach(function (run) {  // two replicas of one person (two tabs, a reload) are one author
      var uid = self._authorOf(run.client);
      var last = merged[merged.length - 1];
      if (last && last.uid === uid) last.text += run.text;
      else merged.push({uid: uid, text: run.text});
    });
    merged.forEach(function (run) {
      var key = run.uid || "";
      var person = (run.uid && people[run.uid]) || null;
      var name = person ? person.name : "Someone not in the class list";
      var c = color(person && person.color);
      if (!(key in counts)) { counts[key] = 0; order.push(key); }
      counts[key] += run.text.replace(/\n/g, "").length;
      var span = el("span", {"class": "notes-run", "data-user-id": key, title: name}, run.text);
      span.style.setProperty("--author", c);
      span.style.setProperty("--author-bg", c + "2e");
      out.appendChild(span);
    });
    this.authorshipText.replaceChildren(out);
    if (!merged.length) this.authorshipText.appendChild(el("p", {"class": "muted"}, "Nothing written yet."));

    order.sort(function (a, b) { return counts[b] - counts[a]; });
    var legend = document.createDocumentFragment();
    order.forEach(function (key) {
      var person = (key && people[key]) || null;
      var li = el("li", {"class": "notes-author", "data-testid": "notes-author", "data-user-id": key});
      var swatch = el("span", {"class": "notes-swatch", "aria-hidden": "true"});
      swatch.style.background = color(person && person.color);
      li.appendChild(swatch);
      li.appendChild(el("span", {"class": "notes-author-name"},
                        person ? person.name : "Someone not in the class list"));
      var n = counts[key];
      li.appendChild(el("span", {"class": "muted notes-author-count"}, n + (n === 1 ? " character" : " characters")));
      legend.appendChild(li);
    });
    this.legend.replaceChildren(legend);
  };

  Notes.prototype.setAuthorship = function (on) {
    if (on && this.history) this.history.close();
    this.showingAuthorship = on;
    this.authorshipButton.setAttribute("aria-pressed", on ? "true" : "false");
    this.authorshipButton.textContent = on ? "Hide authorship" : "Show authorship";
    this.authorship.hidden = !on;
    this.editorWrap.hidden = on;
    if (on) this._renderAuthorship();
    else this.authorshipText.replaceChildren();
    this._applyEdit();
  };

  // --- history ---------------------------------------------------------------------------------------------
  Notes.prototype.openHistory = function () {
    var History = global.AulaCollabHistory;
    if (!History) return;
    if (this.showingAuthorship) this.setAuthorship(false);
    var self = this, Quill = global.AulaCollab.Quill;
    this.editorWrap.hidden = true;
    this.historyButton.disabled = true;
    this.history = History.open("notes", this.historyEl, function (ydoc, target) {
      var host = target.appendChild(el("div", {"class": "notes-history-text", "data-testid": "notes-history-text"}));
      var viewer = new Quill(host, {theme: "snow", readOnly: true, formats: FORMATS, modules: {toolbar: false}});
      viewer.setContents(ydoc.getText("body").toDelta(), "silent");
      viewer.root.setAttribute("aria-label", "The notes as they were then (read-only)");
    }, {
      sessionId: this.root.dataset.sessionId,
      onClose: function () {
        self.history = null;
        self.editorWrap.hidden = false;
        self.historyButton.disabled = false;
        self._applyEdit();
        self.historyButton.focus();
      }
    });
    this._applyEdit();
  };

  // --- start -----------------------------------------------------------------------------------------------
  function sharedClient(sessionId) {
    // One socket carries both documents: the notes and the board share the page's client.
    if (!global.aulaCollab) global.aulaCollab = new global.AulaCollabClient({sessionId: sessionId});
    return global.aulaCollab;
  }

  function start() {
    var root = document.querySelector("[data-testid=notes][data-session-id]");
    if (!root || root.dataset.started) return;
    if (!global.AulaCollab || !global.AulaCollabClient) {
      if (global.console) global.console.error("notes.js needs aula-collab.js and collab.js loaded first");
      return;
    }
    root.dataset.started = "1";
    global.aulaNotes = new Notes(root, sharedClient(root.dataset.sessionId));
  }

  global.AulaNotes = {Notes: Notes, textRuns: textRuns, start: start};
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(window);
