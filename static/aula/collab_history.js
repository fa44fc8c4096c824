/* History slider for the session's shared documents (whiteboard and notes, docs/collab.md).
 *
 * AulaCollabHistory.open(kind, container, render, options) lists the saved versions of one document
 * (GET /sessions/<id>/collab/<kind>/history/, oldest first; the compactor keeps about one a minute) and shows
 * the one under the slider: its Yjs state goes into a Y.Doc of its own, never the live one, and
 * render(ydoc, target) draws it read-only into `target` (the board with its own renderer, the notes with a
 * read-only Quill). "Back to live" (or Escape) empties the container, hides it and calls options.onClose.
 */
(function (global) {
  "use strict";

  if (global.AulaCollabHistory) return;  // one copy, whichever template loaded it first

  var LOAD_DELAY_MS = 120;  // dragging the slider loads where it stops, not every step on the way

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    if (text != null) node.textContent = text;
    return node;
  }

  function decode(text) {
    if (global.AulaCollabCodec) return global.AulaCollabCodec.decode(text);
    var bin = global.atob(text || "");
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }

  function when(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso || "";
    var time = d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
    return d.toDateString() === new Date().toDateString() ? time : d.toLocaleDateString() + " " + time;
  }

  function getJSON(url) {
    return global.fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          if (!response.ok) {
            var message = (body && body.error && body.error.message) || ("HTTP " + response.status);
            throw new Error(message);
          }
          return body;
        });
      });
  }

  function sessionIdOf(container, options) {
    if (options && options.sessionId) return String(options.sessionId);
    var holder = container.closest("[data-session-id]");
    return holder ? holder.dataset.sessionId : null;
  }

  function History(kind, container, render, options) {
    this.kind = kind;
    this.container = container;
    this.render = render;
    this.options = options || {};
    this.versions = [];
    this.cache = {};         // version id -> Uint8Array state (a version never changes once listed)
    this.ydoc = null;
    this.shown = null;
    this.closed = false;
    this._timer = null;
    this._want = null;
    var sessionId = sessionIdOf(container, this.options);
    this.base = "/sessions/" + encodeURIComponent(sessionId) + "/collab/" + encodeURIComponent(kind) + "/history/";
    this._build();
    this.loaded = this._list();
  }

  History.prototype._build = function () {
    var self = this, label = this.kind === "board" ? "whiteboard" : "notes";
    var id = "collab-history-" + this.kind;
    this.root = el("div", {"class": "collab-history", "data-testid": "history", "data-kind": this.kind,
                           role: "region", "aria-label": "Earlier versions of the " + label});
    var bar = el("div", {"class": "collab-history-bar"});
    var field = el("label", {"class": "collab-history-field", "for": id}, "Version ");
    this.slider = el("input", {id: id, type: "range", min: "0", max: "0", step: "1", value: "0", disabled: "",
                               "data-testid": "history-slider"});
    this.when = el("output", {"class": "collab-history-when", "for": id, "data-testid": "history-when"});
    field.appendChild(this.slider);
    var live = el("button", {type: "button", "class": "secondary small", "data-testid": "history-live"},
                  "Back to live");
    bar.appendChild(field);
    bar.appendChild(this.when);
    bar.appendChild(live);
    this.status = el("p", {"class": "muted collab-history-status", role: "status", "aria-live": "polite",
                           "data-testid": "history-status"}, "Loading the versions…");
    this.view = el("div", {"class": "collab-history-view", "data-testid": "history-view"});
    this.root.appendChild(bar);
    this.root.appendChild(this.status);
    this.root.appendChild(this.view);

    this.slider.addEventListener("input", function () { self._pick(Number(self.slider.value), LOAD_DELAY_MS); });
    this.slider.addEventListener("change", function () { self._pick(Number(self.slider.value), 0); });
    live.addEventListener("click", function () { self.close(); });
    this._onKey = function (ev) {
      if (ev.key === "Escape") { ev.preventDefault(); self.close(); }
    };
    this.root.addEventListener("keydown", this._onKey);

    this.container.replaceChildren(this.root);
    this.container.hidden = false;
    live.focus();
  };

  History.prototype._list = function () {
    var self = this;
    return getJSON(this.base).then(function (body) {
      if (self.closed) return;
      self.versions = (body && body.versions) || [];
      if (!self.versions.length) {
        self.status.textContent = "No saved versions yet: a version is kept about once a minute while people work.";
        return;
      }
      self.slider.max = String(self.versions.length - 1);
      self.slider.value = self.slider.max;
      self.slider.disabled = false;
      return self.show(self.versions.length - 1);
    }).catch(function (err) {
      if (!self.closed) self.status.textContent = "The history could not be loaded: " + err.message;
    });
  };

  History.prototype._pick = function (index, delay) {
    var self = this;
    this._label(index);
    clearTimeout(this._timer);
    this._timer = setTimeout(function () { self.show(index); }, delay);
  };

  History.prototype._label = function (index) {
    var v = this.versions[index];
    if (!v) return;
    var text = when(v.at) + " · " + (index + 1) + " of " + this.versions.length;
    this.when.textContent = text;
    this.slider.setAttribute("aria-valuetext", text);
  };

  /* Load version `index` (oldest is 0) and draw it; a later pick overtakes one still loading. */
  History.prototype.show = function (index) {
    var v = this.versions[index];
    if (!v || this.closed) return Promise.resolve();
    var self = this;
    this._want = v.id;
    this._label(index);
    this.slider.value = String(index);
    this.status.textContent = "Loading the version of " + when(v.at) + "…";
    var state = this.cache[v.id]
      ? Promise.resolve(this.cache[v.id])
      : getJSON(this.base + encodeURIComponent(v.id) + "/").then(function (body) {
        var bytes = decode(body.state);
        self.cache[v.id] = bytes;
        return bytes;
      });
    return state.then(function (bytes) {
      if (self.closed || self._want !== v.id) return;
      var Y = global.AulaCollab.Y;
      var ydoc = new Y.Doc();
      Y.applyUpdate(ydoc, bytes);
      self.view.replaceChildren();
      self.view.dataset.versionId = String(v.id);
      self.render(ydoc, self.view);
      if (self.ydoc) self.ydoc.destroy();
      self.ydoc = ydoc;
      self.shown = v;
      self.status.textContent = "Showing the version of " + when(v.at) + " (read-only).";
    }).catch(function (err) {
      if (!self.closed && self._want === v.id) {
        self.status.textContent = "This version could not be loaded: " + err.message;
      }
    });
  };

  History.prototype.close = function () {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this._timer);
    if (this.ydoc) this.ydoc.destroy();
    this.ydoc = null;
    this.container.replaceChildren();
    this.container.hidden = true;
    if (this.container._aulaHistory === this) this.container._aulaHistory = null;
    if (this.options.onClose) this.options.onClose();
  };

  global.AulaCollabHistory = {
    /* Show the history of `kind` ("board" or "notes") in `container`; returns the open history (close()). */
    open: function (kind, container, render, options) {
      if (container._aulaHistory) container._aulaHistory.close();
      var history = new History(kind, container, render, options);
      container._aulaHistory = history;
      return history;
    },
    History: History,
  };
})(window);
