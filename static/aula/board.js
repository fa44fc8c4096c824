/* Aula whiteboard: the session's shared board (a Yjs document, schema in docs/collab.md) drawn as SVG.
 *
 * The document is the only state: a tool writes elements into it in local transactions (origin h.LOCAL, so the
 * UndoManager undoes only this person's work) and the renderer follows the document through observeDeep,
 * touching only the elements a transaction changed, so a board with thousands of strokes stays smooth. When the
 * server refuses an edit, collab.js replaces the document with the server's copy and we rebind to it.
 *
 * Every piece of user text (names, text and sticky notes, image names) reaches the page through textContent.
 */
(function (global) {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var HTML_NS = "http://www.w3.org/1999/xhtml";
  var PAGE_W = 1600, PAGE_H = 900;               // board units (docs/collab.md)
  var FIRST_PAGE = "p1";
  var TYPES = {pen: 1, line: 1, arrow: 1, rect: 1, ellipse: 1, text: 1, sticky: 1, image: 1};
  var STROKED = {pen: 1, line: 1, arrow: 1, rect: 1, ellipse: 1};
  var STICKY_FILL = "#fff59d";
  var STICKY_W = 240, STICKY_H = 180;
  var ZOOM_MIN = 0.1, ZOOM_MAX = 8;
  var COMMIT_EVERY_MS = 100;                     // a stroke in progress reaches the document ~10 times a second
  var HIT_PX = 6;                                // how close (screen pixels) a pointer must be to hit a stroke
  var NOTICE_MS = 15000;
  var COLOR_RE = /^#[0-9a-fA-F]{6}$/;
  var KEY_TOOLS = {v: "select", h: "hand", p: "pen", l: "line", a: "arrow", r: "rect", o: "ellipse", t: "text",
                   s: "sticky", e: "eraser"};
  var NOTICE_TEXT = {
    locked: "Your last change was not added: the whiteboard is locked for you.",
    forbidden: "Your last change was not added: it changed something that is not yours to change.",
    invalid_update: "Your last change was not added: the server could not read it.",
    too_large: "Your last change was not added: it was too large. Try a smaller change.",
    consent_required: "Your last change was not added: a parent's consent is needed before you can draw.",
    masked: "Part of your text was hidden by the class's word rules."
  };

  function round1(v) { return Math.round(v * 10) / 10; }
  function num(v, fallback) { return typeof v === "number" && isFinite(v) ? v : fallback; }
  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }
  function color(v, fallback) { return typeof v === "string" && COLOR_RE.test(v) ? v : fallback; }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }

  function setAttrs(node, attrs) {
    Object.keys(attrs).forEach(function (k) {
      var v = String(attrs[k]);
      if (node.getAttribute(k) !== v) node.setAttribute(k, v);
    });
  }

  // An image on the board is only ever one the server serves for this session's course.
  function imageSrc(src, sessionId) {
    var re = new RegExp("^/sessions/" + sessionId + "/collab/assets/\\d+/$");
    return typeof src === "string" && re.test(src) ? src : null;
  }

  /* Pen points as an SVG path, smoothed with quadratic curves through the midpoints. */
  function penPath(pts) {
    var n = Math.floor(pts.length / 2);
    if (n === 0) return "";
    var x0 = round1(pts[0]), y0 = round1(pts[1]);
    if (n === 1) return "M" + x0 + " " + y0 + "l0.01 0";
    var d = "M" + x0 + " " + y0;
    if (n === 2) return d + "L" + round1(pts[2]) + " " + round1(pts[3]);
    for (var i = 1; i < n - 1; i++) {
      var x = pts[2 * i], y = pts[2 * i + 1], nx = pts[2 * i + 2], ny = pts[2 * i + 3];
      d += "Q" + round1(x) + " " + round1(y) + " " + round1((x + nx) / 2) + " " + round1((y + ny) / 2);
    }
    return d + "L" + round1(pts[2 * n - 2]) + " " + round1(pts[2 * n - 1]);
  }

  function arrowPath(x1, y1, x2, y2, width) {
    var angle = Math.atan2(y2 - y1, x2 - x1);
    var len = Math.max(12, width * 4);
    var a1 = angle + Math.PI * 0.85, a2 = angle - Math.PI * 0.85;
    return "M" + round1(x1) + " " + round1(y1) + "L" + round1(x2) + " " + round1(y2) +
      "M" + round1(x2 + len * Math.cos(a1)) + " " + round1(y2 + len * Math.sin(a1)) +
      "L" + round1(x2) + " " + round1(y2) +
      "L" + round1(x2 + len * Math.cos(a2)) + " " + round1(y2 + len * Math.sin(a2));
  }

  function segDist(px, py, x1, y1, x2, y2) {
    var dx = x2 - x1, dy = y2 - y1;
    var len2 = dx * dx + dy * dy;
    var t = len2 ? clamp(((px - x1) * dx + (py - y1) * dy) / len2, 0, 1) : 0;
    var cx = x1 + t * dx, cy = y1 + t * dy;
    return Math.sqrt((px - cx) * (px - cx) + (py - cy) * (py - cy));
  }

  /* A plain snapshot of one element map (what the renderer and hit tests read). */
  function readElement(m) {
    var type = m.get("type");
    var el = {type: type, page: m.get("page") || FIRST_PAGE, z: num(m.get("z"), 0), author: m.get("author")};
    el.color = color(m.get("color"), "#1c2430");
    el.width = clamp(num(m.get("width"), 4), 0.5, 200);
    el.fill = color(m.get("fill"), "");
    if (type === "pen") {
      var points = m.get("points");
      el.points = points && typeof points.toArray === "function" ? points.toArray() : [];
    } else {
      el.x = num(m.get("x"), 0); el.y = num(m.get("y"), 0);
      el.w = num(m.get("w"), 0); el.h = num(m.get("h"), 0);
    }
    if (type === "text" || type === "sticky") {
      var text = m.get("text");
      el.text = text ? text.toString() : "";
      el.size = clamp(num(m.get("size"), 24), 4, 400);
      if (type === "sticky" && !el.fill) el.fill = STICKY_FILL;
    }
    if (type === "image") el.src = m.get("src");
    return el;
  }

  function boxOf(el) {
    if (el.type === "pen") {
      var p = el.points, x1 = Infinity, y1 = Infinity, x2 = -Infinity, y2 = -Infinity;
      for (var i = 0; i + 1 < p.length; i += 2) {
        if (p[i] < x1) x1 = p[i]; if (p[i] > x2) x2 = p[i];
        if (p[i + 1] < y1) y1 = p[i + 1]; if (p[i + 1] > y2) y2 = p[i + 1];
      }
      if (x1 === Infinity) return null;
      var half = el.width / 2;
      return {x1: x1 - half, y1: y1 - half, x2: x2 + half, y2: y2 + half};
    }
    var xa = Math.min(el.x, el.x + el.w), xb = Math.max(el.x, el.x + el.w);
    var ya = Math.min(el.y, el.y + el.h), yb = Math.max(el.y, el.y + el.h);
    var pad = STROKED[el.type] ? el.width / 2 : 0;
    return {x1: xa - pad, y1: ya - pad, x2: xb + pad, y2: yb + pad};
  }

  /* Does a pointer at (px, py) touch this element (tol in board units)? */
  function hits(el, box, px, py, tol) {
    if (!box || px < box.x1 - tol || px > box.x2 + tol || py < box.y1 - tol || py > box.y2 + tol) return false;
    var reach = tol + (STROKED[el.type] ? el.width / 2 : 0);
    switch (el.type) {
      case "pen":
        var p = el.points;
        if (p.length < 4) return Math.abs(px - p[0]) <= reach && Math.abs(py - p[1]) <= reach;
        for (var i = 0; i + 3 < p.length; i += 2) {
          if (segDist(px, py, p[i], p[i + 1], p[i + 2], p[i + 3]) <= reach) return true;
        }
        return false;
      case "line":
      case "arrow":
        return segDist(px, py, el.x, el.y, el.x + el.w, el.y + el.h) <= reach;
      case "rect":
        if (el.fill) return true;
        var bx1 = box.x1 + el.width / 2, bx2 = box.x2 - el.width / 2, by1 = box.y1 + el.width / 2, by2 = box.y2 - el.width / 2;
        return Math.min(Math.abs(px - bx1), Math.abs(px - bx2)) <= reach && py >= by1 - reach && py <= by2 + reach ||
          Math.min(Math.abs(py - by1), Math.abs(py - by2)) <= reach && px >= bx1 - reach && px <= bx2 + reach;
      case "ellipse":
        var rx = Math.abs(el.w) / 2, ry = Math.abs(el.h) / 2;
        var cx = Math.min(el.x, el.x + el.w) + rx, cy = Math.min(el.y, el.y + el.h) + ry;
        if (rx < 1 || ry < 1) return true;
        var r = Math.sqrt(Math.pow((px - cx) / rx, 2) + Math.pow((py - cy) / ry, 2));
        return el.fill ? r <= 1 + reach / Math.min(rx, ry) : Math.abs(r - 1) * Math.min(rx, ry) <= reach;
      default:
        return true;  // text, sticky, image: their box
    }
  }

  /* Draw one element into `node` (an SVG <g>, created empty by the caller). */
  function paint(node, el, sessionId) {
    var shape = node.firstChild;
    var want = {pen: "path", line: "line", arrow: "path", rect: "rect", ellipse: "ellipse", text: "foreignObject",
                sticky: "foreignObject", image: "image"}[el.type];
    if (!shape || shape.localName !== want) {
      while (node.firstChild) node.removeChild(node.firstChild);
      shape = svg(want);
      node.appendChild(shape);
    }
    var stroke = {stroke: el.color, "stroke-width": el.width, "stroke-linecap": "round", "stroke-linejoin": "round"};
    switch (el.type) {
      case "pen":
        setAttrs(shape, stroke);
        setAttrs(shape, {fill: "none", d: penPath(el.points)});
        break;
      case "line":
        setAttrs(shape, stroke);
        setAttrs(shape, {x1: el.x, y1: el.y, x2: el.x + el.w, y2: el.y + el.h});
        break;
      case "arrow":
        setAttrs(shape, stroke);
        setAttrs(shape, {fill: "none", d: arrowPath(el.x, el.y, el.x + el.w, el.y + el.h, el.width)});
        break;
      case "rect":
        setAttrs(shape, stroke);
        setAttrs(shape, {x: Math.min(el.x, el.x + el.w), y: Math.min(el.y, el.y + el.h), width: Math.abs(el.w),
                         height: Math.abs(el.h), fill: el.fill || "none"});
        break;
      case "ellipse":
        setAttrs(shape, stroke);
        setAttrs(shape, {cx: el.x + el.w / 2, cy: el.y + el.h / 2, rx: Math.abs(el.w) / 2, ry: Math.abs(el.h) / 2,
                         fill: el.fill || "none"});
        break;
      case "text":
      case "sticky":
        var sticky = el.type === "sticky";
        setAttrs(shape, {x: el.x, y: el.y, width: Math.max(sticky ? 40 : 20, el.w),
                         height: Math.max(sticky ? 40 : el.size * 1.3, el.h)});
        var div = shape.firstChild;
        if (!div) {
          div = document.createElementNS(HTML_NS, "div");
          div.className = sticky ? "board-sticky" : "board-text";
          shape.appendChild(div);
        }
        if (div.textContent !== el.text) div.textContent = el.text;
        div.style.fontSize = el.size + "px";
        div.style.color = el.color;
        if (sticky) div.style.backgroundColor = el.fill;
        break;
      case "image":
        var src = imageSrc(el.src, sessionId);
        setAttrs(shape, {x: Math.min(el.x, el.x + el.w), y: Math.min(el.y, el.y + el.h), width: Math.abs(el.w),
                         height: Math.abs(el.h), preserveAspectRatio: "none"});
        if (src && shape.getAttribute("href") !== src) shape.setAttribute("href", src);
        break;
    }
  }

  /* Render a whole board document (read-only) into an <svg>: used for history versions. */
  function renderStatic(ydoc, target, pageId, sessionId) {
    var elements = ydoc.getMap("elements");
    var pages = ydoc.getArray("pages").toArray();
    // The page being looked at, if that version has it; else its first page.
    var page = pageId && (pages.indexOf(pageId) >= 0 || (!pages.length && pageId === FIRST_PAGE)) ? pageId :
      pages[0] || FIRST_PAGE;
    var list = [];
    elements.forEach(function (m, id) {
      if (!(m instanceof global.AulaCollab.Y.Map) || !TYPES[m.get("type")]) return;
      var el = readElement(m);
      if (el.page === page) list.push({id: id, el: el});
    });
    list.sort(function (a, b) { return a.el.z - b.el.z || (a.id < b.id ? -1 : 1); });
    var root = target.localName === "svg" ? target : target.appendChild(svg("svg", {
      "class": "board-svg-static", "data-testid": "board-static", "data-page-id": page, viewBox: "0 0 " + PAGE_W + " " + PAGE_H, role: "img", "aria-label": "Whiteboard version"}));
    while (root.firstChild) root.removeChild(root.firstChild);
    root.appendChild(svg("rect", {"class": "board-page", x: 0, y: 0, width: PAGE_W, height: PAGE_H}));
    list.forEach(function (item) {
      var g = svg("g", {"data-element-id": item.id, "data-type": item.el.type});
      paint(g, item.el, sessionId);
      root.appendChild(g);
    });
    return root;
  }

  // =====================================================================================================
  function Board(root, client) {
    this.root = root;
    this.client = client;
    this.h = client.doc("board");
    this.Y = global.AulaCollab.Y;
    this.sessionId = root.dataset.sessionId;
    this.canModerate = !!root.dataset.canModerate;
    this.svg = root.querySelector(".board-svg");
    this.layer = root.querySelector(".board-elements");
    this.selLayer = root.querySelector(".board-selections");
    this.stage = root.querySelector(".board-stage");
    this.cursorLayer = root.querySelector(".board-cursors");
    this.noticeEl = root.querySelector("[data-testid=board-notice]");
    this.editState = root.querySelector("[data-testid=board-edit-state]");

    this.page = FIRST_PAGE;
    this.view = {x: PAGE_W / 2, y: PAGE_H / 2, zoom: 1};  // board point at the centre, zoom 1 = page width fits
    this.size = {w: 1, h: 1};
    this.tool = "pen";
    this.selection = [];
    this.cursor = null;
    this.presenting = false;
    this.following = true;
    this.counter = 0;
    this.maxZ = 0;

    this.nodes = new Map();      // element id -> <g> on the current page
    this.data = new Map();       // element id -> readElement() snapshot (current page)
    this.boxes = new Map();      // element id -> bounding box (current page)
    this.order = [];             // ids on the current page by (z, id): the DOM order
    this.gesture = null;
    this.editor = null;
    this.spaceDown = false;
    this.cursorNodes = new Map();
    this.UNTRACKED = {local: "board", untracked: true};  // sent like any local edit, but not in the undo stack

    this._bindUi();
    this._bindDoc(this.h.ydoc);
    var self = this;
    this.h.on("reset", function (ydoc) { self._bindDoc(ydoc); });
    this.h.on("ready", function () { self.renderAll(); self._renderPages(); self._followPresenter(); });
    this.h.on("edit", function () { self._applyEdit(); });
    this.h.on("awareness", function () { self._followPresenter(); self._renderRemote(); });
    client.on("people", function () { self._renderRemote(); });
    client.on("notice", function (n) { if (!n.doc || n.doc === "board") self.notice(n); });
    client.on("status", function (state) { self._status(state); });
    this._applyEdit();
    this._setTool(this.tool);
    this._measure();
    this.fit(false);
  }

  // --- the document ---------------------------------------------------------------------------------------
  Board.prototype._bindDoc = function (ydoc) {
    var Y = this.Y, self = this;
    this._cancelGesture(false);
    this._closeEditor(false);
    if (this.undo) this.undo.destroy();
    this.ydoc = ydoc;
    this.elements = ydoc.getMap("elements");
    this.pages = ydoc.getArray("pages");
    this.pagemeta = ydoc.getMap("pagemeta");
    this.counter = 0;
    this.maxZ = 0;
    this.undo = new Y.UndoManager([this.elements, this.pages, this.pagemeta],
                                  {trackedOrigins: new Set([this.h.LOCAL]), captureTimeout: 500});
    this.undo.on("stack-item-added", function () { self._undoButtons(); });
    this.undo.on("stack-item-popped", function () { self._undoButtons(); });
    this.undo.on("stack-cleared", function () { self._undoButtons(); });
    this.elements.observeDeep(function (events) { self._changed(events); });
    this.pages.observe(function () { self._renderPages(); });
    this.pagemeta.observeDeep(function () { self._renderPages(); });
    this.selection = [];
    this._knownPages = null;  // a new (empty until synced) document: no page has gone away
    this._clearRendered();
    this.renderAll();
    this._renderPages();
    this._undoButtons();
    this._announce();  // our replica's clientID changed
  };

  Board.prototype.pageIds = function () {
    var seen = {}, out = [];
    this.pages.toArray().forEach(function (id) {
      if (typeof id === "string" && !seen[id]) { seen[id] = 1; out.push(id); }
    });
    if (!out.length) out.push(FIRST_PAGE);  // "p1" exists from the start, written or not
    return out;
  };

  Board.prototype.newId = function () {
    this.counter += 1;
    return this.ydoc.clientID + "-" + this.counter;
  };

  Board.prototype.me = function () { return this.client.me ? this.client.me.user_id : null; };

  Board.prototype.canEdit = function () { return this.h.canEdit(); };

  /* Add an element: the whole map in one transaction, so the server sees it complete with its author. */
  Board.prototype.addElement = function (fields, extra) {
    var Y = this.Y, self = this;
    var id = this.newId();
    var m = new Y.Map();
    this.ydoc.transact(function () {
      m.set("id", id);
      m.set("page", self.page);
      m.set("author", self.me());
      m.set("z", self.maxZ + 1);
      Object.keys(fields).forEach(function (k) { m.set(k, fields[k]); });
      if (extra) extra(m);
      self.elements.set(id, m);
    }, this.h.LOCAL);
    return id;
  };

  Board.prototype.transact = function (fn) { this.ydoc.transact(fn, this.h.LOCAL); };

  // --- incremental rendering --------------------------------------------------------------------------
  Board.prototype._changed = function (events) {
    var dirty = new Set(), elements = this.elements;
    events.forEach(function (ev) {
      if (ev.target === elements) {
        ev.changes.keys.forEach(function (_change, key) { dirty.add(key); });
        return;
      }
      // Something inside an element (its keys, its points, its text): find the element map.
      var t = ev.target;
      while (t && t._item && t._item.parent !== elements) t = t._item.parent;
      if (t && t._item && typeof t._item.parentSub === "string") dirty.add(t._item.parentSub);
    });
    var self = this;
    dirty.forEach(function (id) { self.renderElement(id); });
    if (this.selection.length) {
      this.selection = this.selection.filter(function (id) { return self.nodes.has(id); });
    }
    this._renderSelections();
    if (this.editor && !this.nodes.has(this.editor.id)) this._closeEditor(false);
    else if (this.editor && dirty.has(this.editor.id)) this._syncEditor();
  };

  Board.prototype._clearRendered = function () {
    while (this.layer.firstChild) this.layer.removeChild(this.layer.firstChild);
    this.nodes.clear(); this.data.clear(); this.boxes.clear();
    this.order = [];
  };

  Board.prototype.renderAll = function () {
    var self = this, Y = this.Y;
    this._clearRendered();
    var list = [];
    this.elements.forEach(function (m, id) {
      if (!(m instanceof Y.Map)) return;
      var z = num(m.get("z"), 0);
      if (z > self.maxZ) self.maxZ = z;
      if ((m.get("page") || FIRST_PAGE) === self.page && TYPES[m.get("type")]) list.push(id);
    });
    list.forEach(function (id) { self.renderElement(id); });
    this.selection = this.selection.filter(function (id) { return self.nodes.has(id); });
    this._renderSelections();
    this._renderRemote();
  };

  Board.prototype._orderIndex = function (z, id) {
    var lo = 0, hi = this.order.length, data = this.data;
    while (lo < hi) {
      var mid = (lo + hi) >> 1, other = this.order[mid], oz = data.get(other).z;
      if (oz < z || (oz === z && other < id)) lo = mid + 1; else hi = mid;
    }
    return lo;
  };

  Board.prototype._unrender = function (id) {
    var node = this.nodes.get(id);
    if (!node) return;
    node.remove();
    var i = this.order.indexOf(id);
    if (i >= 0) this.order.splice(i, 1);
    this.nodes.delete(id); this.data.delete(id); this.boxes.delete(id);
  };

  Board.prototype.renderElement = function (id) {
    var m = this.elements.get(id);
    if (!(m instanceof this.Y.Map) || !TYPES[m.get("type")]) { this._unrender(id); return; }
    var el = readElement(m);
    if (el.z > this.maxZ) this.maxZ = el.z;
    if (this.gesture && this.gesture.id === id && this.gesture.tail && this.gesture.tail.length) {
      el.points = el.points.concat(this.gesture.tail);  // what the pen drew since the last commit
    }
    if (el.page !== this.page) { this._unrender(id); return; }
    var node = this.nodes.get(id);
    var old = this.data.get(id);
    if (node && old.z !== el.z) { this._unrender(id); node = null; }
    if (!node) {
      node = svg("g", {"data-element-id": id, "data-testid": "board-element", "data-type": el.type});
      var at = this._orderIndex(el.z, id);
      this.data.set(id, el);
      this.layer.insertBefore(node, at < this.order.length ? this.nodes.get(this.order[at]) : null);
      this.order.splice(at, 0, id);
      this.nodes.set(id, node);
    }
    if (node.dataset.type !== el.type) node.dataset.type = el.type;
    node.dataset.author = String(el.author);
    this.data.set(id, el);
    this.boxes.set(id, boxOf(el));
    paint(node, el, this.sessionId);
  };

  // --- the view: zoom and pan -------------------------------------------------------------------------
  Board.prototype.scale = function () { return this.view.zoom * this.size.w / PAGE_W; };

  Board.prototype._measure = function () {
    var r = this.svg.getBoundingClientRect();
    this.size = {w: Math.max(1, r.width), h: Math.max(1, r.height)};
    this._applyView();
  };

  Board.prototype._applyView = function () {
    var s = this.scale();
    var w = this.size.w / s, hgt = this.size.h / s;
    this.svg.setAttribute("viewBox", round1(this.view.x - w / 2) + " " + round1(this.view.y - hgt / 2) + " " +
                          round1(w) + " " + round1(hgt));
    var label = this.root.querySelector("[data-testid=board-zoom-fit]");
    label.textContent = Math.round(this.view.zoom * 100) + "%";
    this._renderRemote();
    this._positionEditor();
  };

  Board.prototype.setView = function (view, byUser) {
    this.view = {x: clamp(view.x, -PAGE_W * 4, PAGE_W * 5), y: clamp(view.y, -PAGE_H * 4, PAGE_H * 5),
                 zoom: clamp(view.zoom, ZOOM_MIN, ZOOM_MAX)};
    if (byUser) this._stopFollowing();
    this._applyView();
    this._announce();
  };

  Board.prototype.toBoard = function (clientX, clientY) {
    var r = this.svg.getBoundingClientRect(), s = this.scale();
    return {x: this.view.x + (clientX - r.left - r.width / 2) / s, y: this.view.y + (clientY - r.top - r.height / 2) / s};
  };

  Board.prototype.toStage = function (x, y) {
    var s = this.scale();
    return {x: (x - this.view.x) * s + this.size.w / 2, y: (y - this.view.y) * s + this.size.h / 2};
  };

  Board.prototype.zoomAt = function (factor, clientX, clientY) {
    var r = this.svg.getBoundingClientRect();
    if (clientX === undefined) { clientX = r.left + r.width / 2; clientY = r.top + r.height / 2; }
    var p = this.toBoard(clientX, clientY);
    var zoom = clamp(this.view.zoom * factor, ZOOM_MIN, ZOOM_MAX);
    var s = zoom * this.size.w / PAGE_W;
    this.setView({x: p.x - (clientX - r.left - r.width / 2) / s, y: p.y - (clientY - r.top - r.height / 2) / s,
                  zoom: zoom}, true);
  };

  Board.prototype.fit = function (byUser) {
    // The whole page in view whatever the stage's shape.
    var zoom = Math.min(1, (this.size.h / PAGE_H) / (this.size.w / PAGE_W));
    this.setView({x: PAGE_W / 2, y: PAGE_H / 2, zoom: zoom}, byUser);
  };

  // --- pages ------------------------------------------------------------------------------------------
  Board.prototype.showPage = function (id, byUser) {
    if (id === this.page) return;
    this._cancelGesture(true);
    this._closeEditor(true);
    this.page = id;
    this.selection = [];
    if (byUser) this._stopFollowing();
    this.renderAll();
    this._renderPages();
    this._announce();
  };

  Board.prototype.addPage = function () {
    if (!this.canEdit()) return;
    var Y = this.Y, self = this;
    var ids = this.pageIds();
    var id = "p" + this.newId();
    var meta = new Y.Map();
    this.undo.stopCapturing();
    this.transact(function () {
      if (!self.pages.length) self.pages.push([FIRST_PAGE]);
      meta.set("title", "Page " + (ids.length + 1));
      self.pagemeta.set(id, meta);
      self.pages.push([id]);
    });
    this.showPage(id, true);
  };

  Board.prototype._renderPages = function () {
    var list = this.root.querySelector(".board-page-list");
    var ids = this.pageIds(), self = this;
    if (ids.indexOf(this.page) < 0 && (this._knownPages || []).indexOf(this.page) >= 0) {
      // The page we were on went away (an undone "add page"): back to the first one.
      this.page = ids[0];
      this.renderAll();
    }
    this._knownPages = ids;
    while (list.firstChild) list.removeChild(list.firstChild);
    ids.forEach(function (id, i) {
      var meta = self.pagemeta.get(id);
      var title = meta && typeof meta.get === "function" && typeof meta.get("title") === "string" ?
        meta.get("title") : "Page " + (i + 1);
      var b = document.createElement("button");
      b.type = "button";
      b.className = "secondary small board-page-button";
      b.dataset.testid = "board-page";
      b.dataset.pageId = id;
      b.textContent = title;
      if (id === self.page) b.setAttribute("aria-current", "page");
      b.addEventListener("click", function () { self.showPage(id, true); });
      var li = document.createElement("li");
      li.appendChild(b);
      list.appendChild(li);
    });
  };

  // --- tools ------------------------------------------------------------------------------------------
  Board.prototype._setTool = function (tool) {
    var button = this.root.querySelector(".tool[data-tool='" + tool + "']");
    if (!button || button.disabled) return;
    if (tool !== this.tool) this._closeEditor(true);
    this.tool = tool;
    this.root.querySelectorAll(".tool[data-tool]").forEach(function (b) {
      b.setAttribute("aria-pressed", b.dataset.tool === tool ? "true" : "false");
    });
    this.stage.dataset.tool = tool;
    this._announce();
  };

  Board.prototype.style = function () {
    var c = this.root.querySelector("[data-testid=board-color]").value;
    return {color: color(c, "#1c2430"), width: parseFloat(this.root.querySelector("[data-testid=board-width]").value) || 4,
            fill: this.root.querySelector("[data-testid=board-fill]").checked};
  };

  Board.prototype._applyEdit = function () {
    var allowed = this.canEdit();
    var reason = (this.h.edit && this.h.edit.reason) || "";
    this.root.querySelectorAll("[data-draws]").forEach(function (b) { b.disabled = !allowed; });
    this._undoButtons();
    this.editState.dataset.allowed = allowed ? "true" : "false";
    this.editState.textContent = allowed ? "You can draw." :
      (this.h.ready || this.client.me ? "You can't draw now: " + (reason || "the board is locked.") : (reason || "Connecting…"));
    this.root.classList.toggle("board-readonly", !allowed);
    if (!allowed) {
      this._cancelGesture(false);
      this._closeEditor(true);
      var current = this.root.querySelector(".tool[data-tool='" + this.tool + "']");
      if (current && current.disabled) this._setTool("select");
    } else if (this._wasLocked && this.tool === "select") {
      this._setTool("pen");
    }
    this._wasLocked = !allowed;
  };

  Board.prototype._undoButtons = function () {
    if (!this.undo) return;
    var allowed = this.canEdit();
    this.root.querySelector("[data-testid=board-undo]").disabled = !allowed || !this.undo.canUndo();
    this.root.querySelector("[data-testid=board-redo]").disabled = !allowed || !this.undo.canRedo();
  };

  Board.prototype.doUndo = function () { if (this.canEdit()) { this._closeEditor(true); this.undo.undo(); } };
  Board.prototype.doRedo = function () { if (this.canEdit()) { this._closeEditor(true); this.undo.redo(); } };

  /* Students erase their own work; teachers and TAs tidy the whole board. */
  Board.prototype.mayErase = function (id) {
    if (this.canModerate) return true;
    var el = this.data.get(id);
    return !!el && String(el.author) === String(this.me());
  };

  Board.prototype.erase = function (ids) {
    var self = this, me = String(this.me());
    ids = ids.filter(function (id) { return self.mayErase(id) && self.elements.has(id); });
    if (!ids.length || !this.canEdit()) return;
    var mine = ids.filter(function (id) { return String(self.data.get(id).author) === me; });
    var others = ids.filter(function (id) { return mine.indexOf(id) < 0; });
    if (mine.length) this.transact(function () { mine.forEach(function (id) { self.elements.delete(id); }); });
    // A teacher tidying someone else's work: not undoable, since undoing would re-add an element authored by
    // another person, which the server refuses (and the refusal would reset the board).
    if (others.length) this.ydoc.transact(function () { others.forEach(function (id) { self.elements.delete(id); }); },
                                          this.UNTRACKED);
  };

  Board.prototype.hitTest = function (p, filter) {
    var tol = HIT_PX / this.scale();
    for (var i = this.order.length - 1; i >= 0; i--) {
      var id = this.order[i];
      if (filter && !filter(id)) continue;
      if (hits(this.data.get(id), this.boxes.get(id), p.x, p.y, tol)) return id;
    }
    return null;
  };

  // --- pointer gestures -------------------------------------------------------------------------------
  Board.prototype._pointerDown = function (ev) {
    if (ev.button !== 0 && ev.pointerType === "mouse") {
      if (ev.button === 1) this._startPan(ev);  // middle button pans
      return;
    }
    if (this.gesture) return;
    this.svg.focus({preventScroll: true});
    var p = this.toBoard(ev.clientX, ev.clientY);
    if (this.spaceDown || this.tool === "hand") { this._startPan(ev); return; }
    var tool = this.tool, style = this.style(), self = this;
    if (tool === "select") { this._startSelect(ev, p); return; }
    if (!this.canEdit()) return;
    this._closeEditor(true);
    this.undo.stopCapturing();  // each gesture is its own undo step
    if (tool === "pen") {
      var id = this.addElement({type: "pen", color: style.color, width: style.width}, function (m) {
        m.set("points", Y_array(self.Y, [Math.round(p.x), Math.round(p.y)]));
      });
      this.gesture = {kind: "pen", id: id, tail: [], last: {x: Math.round(p.x), y: Math.round(p.y)},
                      committed: Date.now(), pointer: ev.pointerId};
    } else if (tool === "line" || tool === "arrow" || tool === "rect" || tool === "ellipse") {
      this.gesture = {kind: "shape", type: tool, start: p, id: null, style: style, pointer: ev.pointerId, pending: null};
    } else if (tool === "eraser") {
      this.gesture = {kind: "erase", pointer: ev.pointerId};
      this._eraseAt(p);
    } else if (tool === "text" || tool === "sticky") {
      var hit = this.hitTest(p, function (hid) { return self.data.get(hid).type === tool; });
      if (hit) this.openEditor(hit, false); else this.createText(tool, p, style);
      ev.preventDefault();
      return;
    }
    if (this.gesture) this.svg.setPointerCapture(ev.pointerId);
    ev.preventDefault();
  };

  function Y_array(Y, values) {
    var a = new Y.Array();
    a.push(values);
    return a;
  }

  Board.prototype._startPan = function (ev) {
    this.gesture = {kind: "pan", from: {x: ev.clientX, y: ev.clientY}, view: {x: this.view.x, y: this.view.y, zoom: this.view.zoom},
                    pointer: ev.pointerId};
    this.svg.setPointerCapture(ev.pointerId);
    this.stage.classList.add("panning");
    ev.preventDefault();
  };

  Board.prototype._startSelect = function (ev, p) {
    var hit = this.hitTest(p);
    if (!hit) {
      this.setSelection([]);
      return;
    }
    if (ev.shiftKey) {
      var i = this.selection.indexOf(hit);
      this.setSelection(i >= 0 ? this.selection.filter(function (x) { return x !== hit; }) : this.selection.concat([hit]));
    } else if (this.selection.indexOf(hit) < 0) {
      this.setSelection([hit]);
    }
    if (this.canEdit() && this.selection.length) {
      this.gesture = {kind: "move", start: p, dx: 0, dy: 0, ids: this.selection.slice(), pointer: ev.pointerId};
      this.svg.setPointerCapture(ev.pointerId);
    }
    ev.preventDefault();
  };

  Board.prototype._pointerMove = function (ev) {
    var p = this.toBoard(ev.clientX, ev.clientY);
    this.cursor = {x: round1(p.x), y: round1(p.y)};
    this._announce();
    var g = this.gesture;
    if (!g || g.pointer !== ev.pointerId) return;
    if (g.kind === "pan") {
      var s = this.scale();
      this.setView({x: g.view.x - (ev.clientX - g.from.x) / s, y: g.view.y - (ev.clientY - g.from.y) / s,
                    zoom: g.view.zoom}, true);
      return;
    }
    if (g.kind === "pen") {
      // Coalesced events keep fast strokes smooth. Points are whole board units (small varints in the update,
      // docs/collab.md); one that rounds onto the previous adds nothing.
      var events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [];
      if (!events.length) events = [ev];
      for (var i = 0; i < events.length; i++) this._penPoint(g, this.toBoard(events[i].clientX, events[i].clientY));
      this._frame();
      return;
    }
    if (g.kind === "shape") {
      g.pending = p;
      this._frame();
      return;
    }
    if (g.kind === "erase") { this._eraseAt(p); return; }
    if (g.kind === "move") {
      g.dx = p.x - g.start.x; g.dy = p.y - g.start.y;
      var self = this;
      g.ids.forEach(function (id) {
        var node = self.nodes.get(id);
        if (node) node.setAttribute("transform", "translate(" + round1(g.dx) + " " + round1(g.dy) + ")");
      });
      this._renderSelections();
    }
  };

  Board.prototype._penPoint = function (g, q) {
    var x = Math.round(q.x), y = Math.round(q.y);
    if (x === g.last.x && y === g.last.y) return;
    g.tail.push(x, y);
    g.last = {x: x, y: y};
  };

  /* One animation frame: redraw what is being drawn, and hand it to the document at most every 100 ms. */
  Board.prototype._frame = function () {
    if (this._framePending) return;
    this._framePending = true;
    var self = this;
    global.requestAnimationFrame(function () {
      self._framePending = false;
      var g = self.gesture;
      if (!g) return;
      var due = Date.now() - (g.committed || 0) >= COMMIT_EVERY_MS;
      if (g.kind === "pen") {
        if (due) self._commitPen(g); else self.renderElement(g.id);
      } else if (g.kind === "shape" && g.pending) {
        if (due || !g.id) self._commitShape(g); else self._frame();
      }
      if (!due) self._frame();  // come back to commit what is still pending
    });
  };

  Board.prototype._commitPen = function (g) {
    g.committed = Date.now();
    if (!g.tail.length) return;
    var m = this.elements.get(g.id), tail = g.tail;
    g.tail = [];
    if (!(m instanceof this.Y.Map)) return;
    var points = m.get("points");
    this.transact(function () { points.push(tail); });
  };

  Board.prototype._commitShape = function (g) {
    var p = g.pending;
    g.pending = null;
    g.committed = Date.now();
    var w = round1(p.x - g.start.x), hgt = round1(p.y - g.start.y);
    if (!g.id) {
      if (Math.abs(w) * this.scale() < 3 && Math.abs(hgt) * this.scale() < 3) { g.pending = p; return; }
      var fields = {type: g.type, color: g.style.color, width: g.style.width, x: round1(g.start.x), y: round1(g.start.y),
                    w: w, h: hgt};
      if (g.type === "rect" || g.type === "ellipse") fields.fill = g.style.fill ? g.style.color : "";
      g.id = this.addElement(fields);
      return;
    }
    var m = this.elements.get(g.id);
    if (!(m instanceof this.Y.Map)) return;
    this.transact(function () { m.set("w", w); m.set("h", hgt); });
  };

  Board.prototype._pointerUp = function (ev) {
    var g = this.gesture;
    if (!g || g.pointer !== ev.pointerId) return;
    this.gesture = null;
    this.stage.classList.remove("panning");
    if (this.svg.hasPointerCapture(ev.pointerId)) this.svg.releasePointerCapture(ev.pointerId);
    if (g.kind === "pen") {
      this._penPoint(g, this.toBoard(ev.clientX, ev.clientY));
      this._commitPen(g);
      this.renderElement(g.id);
    } else if (g.kind === "shape") {
      g.pending = this.toBoard(ev.clientX, ev.clientY);
      this._commitShape(g);
    } else if (g.kind === "move") {
      this._commitMove(g);
    }
    this.undo.stopCapturing();
  };

  Board.prototype._commitMove = function (g) {
    var self = this;
    g.ids.forEach(function (id) { var n = self.nodes.get(id); if (n) n.removeAttribute("transform"); });
    var dx = round1(g.dx), dy = round1(g.dy);
    if (Math.abs(dx) < 0.5 && Math.abs(dy) < 0.5) { this._renderSelections(); return; }
    this.moveBy(g.ids, dx, dy);
  };

  Board.prototype.moveBy = function (ids, dx, dy) {
    var self = this, Y = this.Y;
    if (!this.canEdit()) return;
    this.transact(function () {
      ids.forEach(function (id) {
        var m = self.elements.get(id);
        if (!(m instanceof Y.Map)) return;
        if (m.get("type") === "pen") {
          var points = m.get("points");
          if (!points || typeof points.toArray !== "function") return;
          var moved = points.toArray().map(function (v, i) { return Math.round(v + (i % 2 ? dy : dx)); });
          points.delete(0, points.length);
          points.insert(0, moved);
        } else {
          m.set("x", round1(num(m.get("x"), 0) + dx));
          m.set("y", round1(num(m.get("y"), 0) + dy));
        }
      });
    });
  };

  /* Stop what the pointer was doing; `commit` keeps a stroke's last points (not when the document was replaced). */
  Board.prototype._cancelGesture = function (commit) {
    var g = this.gesture;
    if (!g) return;
    this.gesture = null;
    this.stage.classList.remove("panning");
    if (commit && g.kind === "pen" && this.elements.has(g.id)) this._commitPen(g);
    var self = this;
    if (g.kind === "move") g.ids.forEach(function (id) { var n = self.nodes.get(id); if (n) n.removeAttribute("transform"); });
  };

  Board.prototype._eraseAt = function (p) {
    var self = this;
    var hit = this.hitTest(p, function (id) { return self.mayErase(id); });
    if (hit) this.erase([hit]);
  };

  // --- selection ----------------------------------------------------------------------------------------
  Board.prototype.setSelection = function (ids) {
    this.selection = ids.slice(0, 50);
    this._renderSelections();
    this._announce();
  };

  Board.prototype._renderSelections = function () {
    var layer = this.selLayer, self = this;
    while (layer.firstChild) layer.removeChild(layer.firstChild);
    var s = this.scale(), pad = 4 / s;
    var g = this.gesture && this.gesture.kind === "move" ? this.gesture : null;
    function outline(id, stroke, testid, uid) {
      var b = self.boxes.get(id);
      if (!b) return;
      var dx = g && g.ids.indexOf(id) >= 0 ? g.dx : 0, dy = g && g.ids.indexOf(id) >= 0 ? g.dy : 0;
      var r = svg("rect", {x: b.x1 - pad + dx, y: b.y1 - pad + dy, width: b.x2 - b.x1 + 2 * pad, height: b.y2 - b.y1 + 2 * pad,
                           fill: "none", stroke: stroke, "stroke-width": 1.5 / s, "stroke-dasharray": (6 / s) + " " + (4 / s),
                           "class": "board-selection", "data-testid": testid, "data-element-id": id});
      if (uid !== undefined) r.setAttribute("data-user-id", uid);
      layer.appendChild(r);
    }
    this.selection.forEach(function (id) { outline(id, "#1f5fbf", "board-selection"); });
    var states = this.h.awareness.states(), people = this.client.people || {};
    Object.keys(states).forEach(function (uid) {
      var st = states[uid];
      if (!st || st.page !== self.page || !Array.isArray(st.selection)) return;
      var c = color(st.color, color((people[uid] || {}).color, "#888888"));
      st.selection.forEach(function (id) { if (typeof id === "string") outline(id, c, "board-remote-selection", uid); });
    });
  };

  // --- text and sticky notes -----------------------------------------------------------------------------
  Board.prototype.createText = function (type, p, style) {
    var Y = this.Y, sticky = type === "sticky";
    var size = sticky ? 24 : clamp(style.width * 5, 16, 64);
    var fields = {type: type, color: sticky ? "#1c2430" : style.color, size: size,
                  x: round1(sticky ? p.x - STICKY_W / 2 : p.x), y: round1(sticky ? p.y - STICKY_H / 2 : p.y - size * 0.65),
                  w: sticky ? STICKY_W : 200, h: sticky ? STICKY_H : round1(size * 1.3)};
    if (sticky) fields.fill = STICKY_FILL;
    var id = this.addElement(fields, function (m) { m.set("text", new Y.Text()); });
    this.openEditor(id, true);
  };

  Board.prototype.openEditor = function (id, created) {
    var m = this.elements.get(id);
    if (!(m instanceof this.Y.Map) || !this.canEdit()) return;
    var text = m.get("text");
    if (!text || typeof text.toString !== "function") return;
    this._closeEditor(true);
    var el = this.data.get(id) || readElement(m);
    var area = document.createElement("textarea");
    area.className = "board-editor" + (el.type === "sticky" ? " sticky" : "");
    area.dataset.testid = "board-text-editor";
    area.setAttribute("aria-label", el.type === "sticky" ? "Sticky note text" : "Text on the board");
    area.value = text.toString();
    area.maxLength = 5000;
    this.stage.appendChild(area);
    this.editor = {id: id, area: area, created: created, text: text};
    var self = this;
    area.addEventListener("input", function () { self._editorInput(); });
    area.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape") { ev.preventDefault(); self._closeEditor(true); self.svg.focus(); }
      ev.stopPropagation();  // letters typed here are not tool shortcuts
    });
    area.addEventListener("blur", function () { if (self.editor && self.editor.area === area) self._closeEditor(true); });
    var node = this.nodes.get(id);
    if (node) node.classList.add("editing");
    this._positionEditor();
    area.focus();  // the board's mousedown keeps the browser from moving the focus back to the svg
  };

  /* Write the textarea's change into the Y.Text as one delete + insert around the common prefix and suffix. */
  Board.prototype._editorInput = function () {
    var e = this.editor;
    if (!e) return;
    var before = e.text.toString(), after = e.area.value;
    if (before === after) return;
    var start = 0;
    while (start < before.length && start < after.length && before[start] === after[start]) start++;
    var endB = before.length, endA = after.length;
    while (endB > start && endA > start && before[endB - 1] === after[endA - 1]) { endB--; endA--; }
    var text = e.text;
    this.transact(function () {
      if (endB > start) text.delete(start, endB - start);
      if (endA > start) text.insert(start, after.slice(start, endA));
    });
  };

  /* Someone else typed in the note we are editing (or the server masked a word): show it, keep the caret. */
  Board.prototype._syncEditor = function () {
    var e = this.editor, value = e.text.toString();
    if (e.area.value === value) { this._positionEditor(); return; }
    var caret = e.area.selectionStart, old = e.area.value;
    var prefix = 0;
    while (prefix < caret && old[prefix] === value[prefix]) prefix++;
    var shift = prefix === caret ? 0 : value.length - old.length;
    e.area.value = value;
    var at = clamp(caret + shift, 0, value.length);
    e.area.setSelectionRange(at, at);
    this._positionEditor();
  };

  Board.prototype._positionEditor = function () {
    var e = this.editor;
    if (!e) return;
    var el = this.data.get(e.id);
    if (!el) return;
    var s = this.scale(), tl = this.toStage(el.x, el.y);
    var st = e.area.style;
    st.left = tl.x + "px";
    st.top = tl.y + "px";
    st.fontSize = el.size * s + "px";
    st.color = el.color;
    if (el.type === "sticky") {
      st.width = Math.max(40, el.w) * s + "px";
      st.height = Math.max(40, el.h) * s + "px";
      st.backgroundColor = el.fill;
    } else {
      st.width = Math.max(200, el.w + el.size) * s + "px";
      st.height = Math.max(el.size * 1.4, el.h + el.size * 0.4) * s + "px";
    }
  };

  Board.prototype._closeEditor = function (keep) {
    var e = this.editor;
    if (!e) return;
    this.editor = null;
    var node = this.nodes.get(e.id);
    if (node) node.classList.remove("editing");
    var self = this;
    if (keep && this.elements && this.elements.has(e.id) && this.ydoc && !this.ydoc.isDestroyed) {
      var value = e.text.toString();
      var m = this.elements.get(e.id);
      if (!value.trim()) {
        if (this.canEdit() && this.mayErase(e.id)) this.transact(function () { self.elements.delete(e.id); });
      } else if (m.get("type") === "text" && node && this.canEdit()) {
        // Let the stored box follow the text, so selection and erasing hit what is shown.
        var div = node.querySelector(".board-text");
        if (div) {
          var w = round1(div.scrollWidth), hgt = round1(div.scrollHeight);
          if (w && hgt && (Math.abs(w - num(m.get("w"), 0)) > 1 || Math.abs(hgt - num(m.get("h"), 0)) > 1)) {
            this.transact(function () { m.set("w", w); m.set("h", hgt); });
          }
        }
      }
    }
    e.area.remove();
  };

  // --- images -------------------------------------------------------------------------------------------
  Board.prototype.openImages = function () {
    if (!this.canEdit()) return;
    var dialog = this.root.querySelector(".board-image-dialog");
    var list = dialog.querySelector(".board-image-list"), note = dialog.querySelector("[data-testid=board-image-note]");
    var self = this;
    note.textContent = "Loading…";
    while (list.firstChild) list.removeChild(list.firstChild);
    if (dialog.showModal) dialog.showModal(); else dialog.setAttribute("open", "");
    global.fetch(this.root.dataset.assetsUrl, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (data) {
        note.textContent = "";
        self._imageList(data.assets || []);
        dialog.querySelector("[data-testid=board-upload]").hidden = !data.can_upload;
      })
      .catch(function () { note.textContent = "The course's images could not be loaded. Try again."; });
  };

  Board.prototype._imageList = function (assets) {
    var dialog = this.root.querySelector(".board-image-dialog");
    var list = dialog.querySelector(".board-image-list"), self = this;
    while (list.firstChild) list.removeChild(list.firstChild);
    dialog.querySelector("[data-testid=board-image-empty]").hidden = assets.length > 0;
    assets.forEach(function (a) {
      var src = imageSrc(a.url, self.sessionId);
      if (!src) return;
      var b = document.createElement("button");
      b.type = "button";
      b.className = "secondary board-image-pick";
      b.dataset.testid = "board-image-pick";
      b.dataset.assetId = String(a.id);
      var img = document.createElement("img");
      img.src = src;
      img.alt = "";
      img.loading = "lazy";
      var name = document.createElement("span");
      name.textContent = String(a.name || "image");
      b.appendChild(img);
      b.appendChild(name);
      b.addEventListener("click", function () { self.placeImage(a); dialog.close(); });
      var li = document.createElement("li");
      li.appendChild(b);
      list.appendChild(li);
    });
  };

  Board.prototype.placeImage = function (asset) {
    var src = imageSrc(asset.url, this.sessionId);
    if (!src || !this.canEdit()) return;
    var w = num(asset.width, 400) || 400, hgt = num(asset.height, 300) || 300;
    var fit = Math.min(1, (PAGE_W * 0.5) / w, (PAGE_H * 0.6) / hgt, (this.size.w * 0.6 / this.scale()) / w);
    w = round1(w * fit); hgt = round1(hgt * fit);
    this.undo.stopCapturing();
    var id = this.addElement({type: "image", src: src, x: round1(this.view.x - w / 2), y: round1(this.view.y - hgt / 2),
                              w: w, h: hgt});
    this._setTool("select");
    this.setSelection([id]);
  };

  Board.prototype.upload = function () {
    var dialog = this.root.querySelector(".board-image-dialog");
    var input = dialog.querySelector("[data-testid=board-upload-file]");
    var note = dialog.querySelector("[data-testid=board-image-note]");
    var self = this;
    if (!input.files || !input.files.length) { note.textContent = "Choose an image file first."; return; }
    var body = new FormData();
    body.append("file", input.files[0]);
    note.textContent = "Uploading…";
    var csrf = (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";
    global.fetch(this.root.dataset.assetsUrl, {method: "POST", body: body, credentials: "same-origin",
                                               headers: {"X-CSRFToken": decodeURIComponent(csrf), Accept: "application/json"}})
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (data) { return {ok: r.ok, data: data}; });
      })
      .then(function (res) {
        if (!res.ok) {
          var err = res.data.error || res.data;
          note.textContent = (err && err.message) || "The image could not be uploaded.";
          return;
        }
        note.textContent = "";
        input.value = "";
        self.placeImage(res.data);
        dialog.close();
      })
      .catch(function () { note.textContent = "The image could not be uploaded: check your connection."; });
  };

  // --- awareness: cursors, selections, the presenter's view ---------------------------------------------
  Board.prototype._announce = function () {
    if (!this.ydoc) return;
    this.h.awareness.setLocal({
      client: this.ydoc.clientID, page: this.page, cursor: this.cursor,
      view: {x: round1(this.view.x), y: round1(this.view.y), zoom: Math.round(this.view.zoom * 1000) / 1000},
      selection: this.selection.slice(0, 50), tool: this.tool, presenting: this.presenting
    });
  };

  Board.prototype._presenter = function () {
    var states = this.h.awareness.states(), best = null;
    Object.keys(states).forEach(function (uid) {
      var st = states[uid];
      if (st && st.presenting && (best === null || Number(uid) < Number(best.uid))) best = {uid: uid, state: st};
    });
    return best;
  };

  Board.prototype._followPresenter = function () {
    var note = this.root.querySelector("[data-testid=board-follow-note]");
    var presenter = this.presenting ? null : this._presenter();
    var followButton = this.root.querySelector("[data-testid=board-follow]");
    followButton.hidden = this.presenting;
    if (!presenter) {
      note.textContent = this.presenting ? "Everyone who follows sees your page and view." : "";
      return;
    }
    var name = presenter.state.name || ((this.client.people || {})[presenter.uid] || {}).name || "The teacher";
    if (!this.following) { note.textContent = name + " is presenting."; return; }
    note.textContent = "Following " + name + ".";
    var st = presenter.state;
    if (typeof st.page === "string" && st.page !== this.page) this.showPage(st.page, false);
    if (st.view && isFinite(st.view.x) && isFinite(st.view.y) && isFinite(st.view.zoom)) {
      var v = this.view;
      if (v.x !== st.view.x || v.y !== st.view.y || v.zoom !== st.view.zoom) this.setView(st.view, false);
    }
  };

  Board.prototype._stopFollowing = function () {
    if (!this.following || this.presenting || !this._presenter()) return;
    this.setFollowing(false);
  };

  Board.prototype.setFollowing = function (on) {
    this.following = on;
    this.root.querySelector("[data-testid=board-follow]").setAttribute("aria-pressed", on ? "true" : "false");
    this._followPresenter();
  };

  Board.prototype.setPresenting = function (on) {
    this.presenting = !!on && this.canModerate;
    var b = this.root.querySelector("[data-testid=board-present]");
    if (b) {
      b.setAttribute("aria-pressed", this.presenting ? "true" : "false");
      b.textContent = this.presenting ? "Stop presenting" : "Present my view";
    }
    this._followPresenter();
    this._announce();
  };

  Board.prototype._renderRemote = function () {
    if (!this.cursorLayer) return;
    var states = this.h.awareness.states(), people = this.client.people || {}, self = this;
    var seen = new Set();
    Object.keys(states).forEach(function (uid) {
      var st = states[uid];
      if (!st || st.page !== self.page || !st.cursor) return;
      var at = self.toStage(st.cursor.x, st.cursor.y);
      if (at.x < 0 || at.y < 0 || at.x > self.size.w || at.y > self.size.h) return;
      seen.add(uid);
      var node = self.cursorNodes.get(uid);
      if (!node) {
        node = document.createElement("div");
        node.className = "board-cursor";
        node.dataset.testid = "board-cursor";
        node.dataset.userId = uid;
        node.appendChild(document.createElement("span")).className = "board-cursor-dot";
        node.appendChild(document.createElement("span")).className = "board-cursor-name";
        self.cursorLayer.appendChild(node);
        self.cursorNodes.set(uid, node);
      }
      var person = people[uid] || {};
      var c = color(st.color, color(person.color, "#888888"));
      var name = String(st.name || person.name || "Someone");
      var label = node.lastChild;
      if (label.textContent !== name) label.textContent = name;
      label.style.backgroundColor = c;
      node.firstChild.style.borderColor = c;
      node.style.transform = "translate(" + Math.round(at.x) + "px," + Math.round(at.y) + "px)";
    });
    this.cursorNodes.forEach(function (node, uid) {
      if (!seen.has(uid)) { node.remove(); self.cursorNodes.delete(uid); }
    });
    this._renderSelections();
  };

  // --- notices and connection -----------------------------------------------------------------------------
  Board.prototype.notice = function (n) {
    var text = (n.code && NOTICE_TEXT[n.code]) || n.message || "Your last change was not added.";
    if (n.code && NOTICE_TEXT[n.code] && n.message && n.code !== "masked") text += " (" + n.message + ")";
    var el = this.noticeEl;
    el.textContent = text;
    el.dataset.code = n.code || "";
    el.hidden = false;
    clearTimeout(this._noticeTimer);
    this._noticeTimer = setTimeout(function () { el.hidden = true; }, NOTICE_MS);
  };

  Board.prototype._status = function (state) {
    this.root.dataset.connection = state;
    if (state === "live") { this._applyEdit(); return; }
    if (state === "reconnecting" && this.canEdit()) {
      this.editState.textContent = "Offline: what you draw is sent when the connection is back.";
    }
  };

  // --- wiring ---------------------------------------------------------------------------------------------
  Board.prototype._bindUi = function () {
    var self = this, root = this.root, svgEl = this.svg;
    root.querySelectorAll(".tool[data-tool]").forEach(function (b) {
      b.addEventListener("click", function () { self._setTool(b.dataset.tool); });
    });
    var actions = {
      undo: function () { self.doUndo(); },
      redo: function () { self.doRedo(); },
      "zoom-in": function () { self.zoomAt(1.25); },
      "zoom-out": function () { self.zoomAt(0.8); },
      "zoom-fit": function () { self.fit(true); },
      "page-add": function () { self.addPage(); },
      image: function () { self.openImages(); },
      upload: function () { self.upload(); },
      present: function () { self.setPresenting(!self.presenting); },
      follow: function () { self.setFollowing(!self.following); },
      history: function () { self.openHistory(); }
    };
    root.querySelectorAll("[data-action]").forEach(function (b) {
      b.addEventListener("click", function () { if (actions[b.dataset.action]) actions[b.dataset.action](); });
    });
    svgEl.addEventListener("pointerdown", function (ev) { self._pointerDown(ev); });
    // The board takes the focus itself (pointerdown); the mouse's default focus move would close a text editor.
    svgEl.addEventListener("mousedown", function (ev) { ev.preventDefault(); });
    svgEl.addEventListener("pointermove", function (ev) { self._pointerMove(ev); });
    svgEl.addEventListener("pointerup", function (ev) { self._pointerUp(ev); });
    svgEl.addEventListener("pointercancel", function (ev) { self._pointerUp(ev); });
    svgEl.addEventListener("pointerleave", function () {
      if (self.gesture) return;
      self.cursor = null;
      self._announce();
    });
    svgEl.addEventListener("dblclick", function (ev) {
      var p = self.toBoard(ev.clientX, ev.clientY);
      var hit = self.hitTest(p, function (id) { var t = self.data.get(id).type; return t === "text" || t === "sticky"; });
      if (hit) self.openEditor(hit, false);
    });
    svgEl.addEventListener("wheel", function (ev) {
      // Ctrl+wheel (and a trackpad pinch) always zooms; a plain wheel zooms only once the board has the focus,
      // so scrolling the page past the board does not get caught in it.
      var zoom = ev.ctrlKey || ev.metaKey;
      if (!zoom && document.activeElement !== svgEl) return;
      ev.preventDefault();
      if (zoom || !ev.shiftKey) {
        self.zoomAt(Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015)), ev.clientX, ev.clientY);
      } else {
        var s = self.scale();
        self.setView({x: self.view.x + ev.deltaY / s, y: self.view.y, zoom: self.view.zoom}, true);
      }
    }, {passive: false});
    root.addEventListener("keydown", function (ev) { self._key(ev); });
    root.addEventListener("keyup", function (ev) {
      if (ev.key === " ") { self.spaceDown = false; self.stage.classList.remove("space-pan"); }
    });
    if (global.ResizeObserver) new global.ResizeObserver(function () { self._measure(); }).observe(svgEl);
    else global.addEventListener("resize", function () { self._measure(); });
    // The history slider (collab_history.js) may load after this script: offer it once it is there.
    var offerHistory = function () {
      if (global.AulaCollabHistory) root.querySelector("[data-testid=board-history]").hidden = false;
    };
    offerHistory();
    global.addEventListener("load", offerHistory);
  };

  Board.prototype._key = function (ev) {
    var t = ev.target;
    if (t && (t.localName === "input" || t.localName === "textarea" || t.localName === "select" || t.isContentEditable)) return;
    var key = ev.key, lower = key.length === 1 ? key.toLowerCase() : key;
    var mod = ev.ctrlKey || ev.metaKey;
    if (mod && lower === "z") { ev.preventDefault(); if (ev.shiftKey) this.doRedo(); else this.doUndo(); return; }
    if (mod && lower === "y") { ev.preventDefault(); this.doRedo(); return; }
    if (mod || ev.altKey) return;
    if (key === " ") {
      if (t && t.localName === "button") return;  // Space presses a toolbar button
      ev.preventDefault();
      this.spaceDown = true;
      this.stage.classList.add("space-pan");
      return;
    }
    if (KEY_TOOLS[lower]) { this._setTool(KEY_TOOLS[lower]); return; }
    if (key === "+" || key === "=") { this.zoomAt(1.25); return; }
    if (key === "-") { this.zoomAt(0.8); return; }
    if (key === "0") { this.fit(true); return; }
    if (key === "Escape") { this.setSelection([]); return; }
    if ((key === "Delete" || key === "Backspace") && this.selection.length) {
      ev.preventDefault();
      this.erase(this.selection);
      return;
    }
    if (key === "Enter" && this.selection.length === 1) {
      var el = this.data.get(this.selection[0]);
      if (el && (el.type === "text" || el.type === "sticky")) { ev.preventDefault(); this.openEditor(this.selection[0], false); }
      return;
    }
    var arrows = {ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1]};
    if (arrows[key] && this.selection.length && t === this.svg) {
      ev.preventDefault();
      var step = ev.shiftKey ? 1 : 10;
      this.moveBy(this.selection, arrows[key][0] * step, arrows[key][1] * step);
    }
  };

  Board.prototype.openHistory = function () {
    var History = global.AulaCollabHistory;
    if (!History || typeof History.open !== "function") return;
    var self = this, container = this.root.querySelector(".board-history-view");
    this._cancelGesture(true);
    this._closeEditor(true);
    History.open("board", container, function (ydoc, target) {
      renderStatic(ydoc, target || container, self.page, self.sessionId);
    }, {sessionId: this.sessionId, onClose: function () {
      self.root.querySelector("[data-testid=board-history]").focus();
    }});
  };

  // --- start ----------------------------------------------------------------------------------------------
  function sharedClient(sessionId) {
    // One socket carries both documents: the board and the notes share the page's client.
    if (!global.aulaCollab) global.aulaCollab = new global.AulaCollabClient({sessionId: sessionId});
    return global.aulaCollab;
  }

  function start() {
    var root = document.querySelector("[data-testid=board][data-session-id]");
    if (!root || root.dataset.started) return;
    if (!global.AulaCollab || !global.AulaCollabClient) {
      if (global.console) global.console.error("board.js needs aula-collab.js and collab.js loaded first");
      return;
    }
    root.dataset.started = "1";
    global.aulaBoard = new Board(root, sharedClient(root.dataset.sessionId));
  }

  global.AulaBoard = {Board: Board, renderStatic: renderStatic, penPath: penPath, start: start};
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(window);
