/* The live review queue: /ws/moderation/queue/ brings `queue.item` signals (ids and versions, never text);
 * on each, the page re-reads that row through the fragment endpoint (which re-checks the reviewer's scope)
 * and inserts, replaces or removes it, and updates the counts. Actions go over the socket when it is open,
 * else as the same POST forms the page works with without JavaScript. A stale version (someone else claimed
 * or decided the item) is answered with a conflict and the row is re-read. See docs/protocol.md,
 * "Moderation queue".
 *
 * Rows are server-rendered (Django autoescape; user text inside <bdi>) and parsed with DOMParser, which
 * never runs scripts; every text this script writes itself is set with textContent.
 */
(function () {
  "use strict";
  var root = document.querySelector("[data-testid=queue]");
  if (!root) return;

  var list = root.querySelector("[data-testid=queue-list]");
  var empty = root.querySelector("[data-testid=queue-empty]");
  var connState = root.querySelector("[data-testid=connection-state]");
  var itemUrl = root.getAttribute("data-item-url");  // .../items/0/
  var page = parseInt(root.getAttribute("data-page"), 10) || 1;
  var pageSize = parseInt(root.getAttribute("data-page-size"), 10) || 50;
  var filter = root.getAttribute("data-filter") || "";
  var next = location.pathname + location.search;
  var inflight = {};   // item id -> true while its row is being fetched
  var again = {};      // item id -> a newer signal arrived during the fetch
  var snapshots = 0;
  var socket = null;

  var STATES = {connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", closed: "Live updates off",
                offline: "Live updates off"};

  function urlFor(id) {
    return itemUrl.replace(/\/0\/$/, "/" + encodeURIComponent(id) + "/") + "?format=json" +
      (filter ? "&" + filter : "") + "&next=" + encodeURIComponent(next);
  }

  function rowOf(id) { return list.querySelector("li[data-item-id='" + String(parseInt(id, 10)) + "']"); }
  function rows() { return Array.prototype.slice.call(list.querySelectorAll("li[data-item-id]")); }

  function setCounts(counts) {
    if (!counts) return;
    ["open", "claimed", "total"].forEach(function (k) {
      var el = root.querySelector("[data-testid=count-" + k + "]");
      if (el && counts[k] !== undefined) el.textContent = String(counts[k]);
    });
  }

  function updateEmpty() { if (empty) empty.hidden = rows().length > 0; }

  function notice(row, text) {
    if (!row) return;
    var el = row.querySelector(".mq-notice");
    if (!el) {
      el = document.createElement("p");
      el.className = "mq-notice error";
      el.setAttribute("role", "alert");
      el.setAttribute("data-testid", "row-notice");
      row.appendChild(el);
    }
    el.textContent = text;
  }

  // Queue order: priority high first, then oldest first, then id.
  function before(a, b) {
    var pa = +a.getAttribute("data-priority"), pb = +b.getAttribute("data-priority");
    if (pa !== pb) return pa > pb;
    var ca = Date.parse(a.getAttribute("data-created")), cb = Date.parse(b.getAttribute("data-created"));
    if (ca !== cb) return ca < cb;
    return +a.getAttribute("data-item-id") < +b.getAttribute("data-item-id");
  }

  function place(fresh) {
    var current = rows();
    var at = null;
    for (var i = 0; i < current.length; i++) {
      if (before(fresh, current[i])) { at = current[i]; break; }
    }
    if (at === null) {
      // It sorts after every row shown: it belongs here only while the page has room.
      if (current.length >= pageSize) return;
      list.appendChild(fresh);
    } else {
      list.insertBefore(fresh, at);
      var all = rows();
      if (all.length > pageSize) all[all.length - 1].remove();  // pushed on to the next page
    }
  }

  function parseRow(html) {
    var doc = new DOMParser().parseFromString("<ol>" + html + "</ol>", "text/html");
    var li = doc.querySelector("li[data-item-id]");
    return li ? document.importNode(li, true) : null;
  }

  // A re-read row keeps what the reviewer was typing in its decision form.
  function keepTyping(from, to) {
    ["decision", "note", "minutes", "scope"].forEach(function (name) {
      var a = from.querySelector("form[data-action=decide] [name=" + name + "]");
      var b = to.querySelector("form[data-action=decide] [name=" + name + "]");
      if (a && b && a.value) b.value = a.value;
    });
    fitAll(to);
  }

  function refresh(id) {
    id = String(parseInt(id, 10));
    if (inflight[id]) { again[id] = true; return; }
    inflight[id] = true;
    fetch(urlFor(id), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (r.status === 404) return {id: id, status: "gone"};
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        setCounts(data.counts);
        var existing = rowOf(id);
        if (data.status === "gone" || data.status === "decided" || !data.in_filter || !data.html) {
          if (existing) existing.remove();
        } else {
          var fresh = parseRow(data.html);
          if (fresh) fitAll(fresh);
          if (fresh && existing) {
            if (+existing.getAttribute("data-version") <= +fresh.getAttribute("data-version")) {
              keepTyping(existing, fresh);
              existing.replaceWith(fresh);
            }
          } else if (fresh && page === 1) {
            place(fresh);  // new items are inserted on the first page only; later pages update what they show
          }
        }
        updateEmpty();
        tick();
      })
      .catch(function () { /* the next signal or reconnect re-reads it */ })
      .then(function () {
        delete inflight[id];
        if (again[id]) { delete again[id]; refresh(id); }
      });
  }

  function onSignal(data) {
    if (!data || !data.id) return;
    var row = rowOf(data.id);
    // The same signal reaches a person through several of their groups (course and school): read once.
    if (row && data.version && +row.getAttribute("data-version") >= +data.version) return;
    if (!row && page !== 1) {
      refreshCounts(data.id);
      return;
    }
    refresh(data.id);
  }

  // A signal for an item this (later) page does not show: only the counts change.
  function refreshCounts(id) {
    fetch(urlFor(id), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) setCounts(data.counts); })
      .catch(function () {});
  }

  // --- actions ----------------------------------------------------------------------------------------------
  function socketMessage(action, id, form) {
    var fd = new FormData(form);
    var msg = {type: "item." + action, id: parseInt(id, 10), version: parseInt(fd.get("version"), 10)};
    if (action === "decide") {
      msg.decision = fd.get("decision");
      msg.note = (fd.get("note") || "").trim();
      if (msg.decision === "timeout" && fd.get("minutes")) msg.minutes = parseInt(fd.get("minutes"), 10);
      if (["warn", "timeout", "ban"].indexOf(msg.decision) >= 0 && fd.get("scope")) msg.scope = fd.get("scope");
    }
    if (action === "assign") msg.assignee = (fd.get("assignee") || "").trim();
    return msg;
  }

  function viaHttp(form, id) {
    return fetch(form.action, {method: "POST", body: new FormData(form), credentials: "same-origin",
                               headers: {"Accept": "application/json"}})
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (data) {
          if (r.status === 409) { refresh(id); notice(rowOf(id), data.message || "This item changed; it is shown as it is now."); return; }
          if (r.status === 404) { refresh(id); return; }
          if (!r.ok) { notice(rowOf(id), data.message || "That did not work; try again."); return; }
          refresh(id);
        });
      });
  }

  function act(form) {
    var row = form.closest("li[data-item-id]");
    if (!row) return;
    var id = row.getAttribute("data-item-id");
    var action = form.getAttribute("data-action");
    var buttons = form.querySelectorAll("button");
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; });
    function done() { Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; }); }
    if (socket && socket.isOpen()) {
      socket.send(socketMessage(action, id, form), function (err) {
        done();
        if (!err) { refresh(id); return; }
        if (err.code === "conflict") { refresh(id); notice(rowOf(id), err.message); return; }
        if (err.code === "disconnected" || err.code === "offline") { viaHttp(form, id); return; }
        notice(rowOf(id), err.message || "That did not work; try again.");
      });
      return;
    }
    viaHttp(form, id).then(done, function () { done(); notice(row, "Could not reach the server; try again."); });
  }

  // Show the duration and scope fields only for the decisions that use them (all are shown without JS).
  function fitFields(form) {
    var select = form.querySelector("select[name=decision]");
    if (!select) return;
    Array.prototype.forEach.call(form.querySelectorAll("[data-for]"), function (field) {
      field.hidden = field.getAttribute("data-for").split(" ").indexOf(select.value) < 0;
    });
  }
  function fitAll(scope) { Array.prototype.forEach.call(scope.querySelectorAll("form[data-action=decide]"), fitFields); }
  list.addEventListener("change", function (ev) {
    if (ev.target.name === "decision" && ev.target.form) fitFields(ev.target.form);
  });
  fitAll(list);

  list.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.getAttribute || !form.getAttribute("data-action")) return;
    ev.preventDefault();
    act(form);
  });

  // --- SLA countdowns ---------------------------------------------------------------------------------------
  function now() { return socket ? socket.now() : Date.now(); }

  function tick() {
    var t = now();
    Array.prototype.forEach.call(list.querySelectorAll(".mq-due[data-due]"), function (el) {
      var left = Math.round((Date.parse(el.getAttribute("data-due")) - t) / 1000);
      var text;
      if (isNaN(left)) return;
      if (left <= 0) text = "overdue";
      else if (left < 3600) text = "due in " + Math.floor(left / 60) + ":" + ("0" + (left % 60)).slice(-2);
      else text = "due in " + Math.floor(left / 3600) + " h " + Math.floor((left % 3600) / 60) + " min";
      el.textContent = text;
      el.setAttribute("data-overdue", left <= 0 ? "1" : "0");
    });
  }
  setInterval(tick, 1000);
  tick();

  // --- the socket -------------------------------------------------------------------------------------------
  if (!window.AulaSocket) return;
  socket = new window.AulaSocket(root.getAttribute("data-ws-path"), {
    onState: function (state) {
      connState.setAttribute("data-state", state);
      connState.textContent = STATES[state] || state;
    },
    onSnapshot: function (data) {
      setCounts(data.counts);
      snapshots += 1;
      // After a reconnect, signals may have been missed: re-read every row shown.
      if (snapshots > 1) rows().forEach(function (row) { refresh(row.getAttribute("data-item-id")); });
    },
    onEvent: function (frame) {
      if (frame.type === "queue.item") onSignal(frame.data);
    },
    onError: function () { /* malformed or refused frames: the socket stays open */ }
  });
})();
