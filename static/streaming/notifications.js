/* Live notices on every signed-in page: one socket to /ws/v1/notifications/ (the user's own room) and a toast
 * with a link to the stream when a followed channel goes live. Text is set with textContent only.
 * See docs/protocol.md, "Notifications".
 */
(function () {
  "use strict";
  if (!window.AulaSocket || !document.body || document.body.getAttribute("data-live-notices") !== "on") return;

  var MAX_TOASTS = 3;
  var HIDE_AFTER_MS = 20000;
  var box = null;

  function container() {
    if (box) return box;
    box = document.createElement("div");
    box.className = "live-toasts";
    box.setAttribute("role", "status");
    box.setAttribute("aria-live", "polite");
    box.setAttribute("data-testid", "live-toasts");
    document.body.appendChild(box);
    return box;
  }

  // Only links into this site: a notice never carries a script or foreign URL into the page.
  function safePath(url) {
    return typeof url === "string" && url.charAt(0) === "/" && url.charAt(1) !== "/" ? url : null;
  }

  function toast(data) {
    var path = safePath(data.url);
    if (!path) return;
    var list = container();
    var item = document.createElement("div");
    item.className = "live-toast";
    item.setAttribute("data-testid", "live-toast");
    item.setAttribute("data-stream-id", String(data.stream_id));
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", function () { item.remove(); });
    var head = document.createElement("p");
    var strong = document.createElement("strong");
    strong.textContent = String(data.channel_title || "");
    head.appendChild(strong);
    head.appendChild(document.createTextNode(" is live"));
    var link = document.createElement("a");
    link.href = path;
    link.textContent = String(data.stream_title || "Watch");
    link.setAttribute("data-testid", "live-toast-link");
    item.appendChild(close);
    item.appendChild(head);
    item.appendChild(link);
    list.appendChild(item);
    while (list.children.length > MAX_TOASTS) list.removeChild(list.firstChild);
    setTimeout(function () { item.remove(); }, HIDE_AFTER_MS);
  }

  new window.AulaSocket("/ws/v1/notifications/", {
    onEvent: function (frame) {
      if (frame.type === "notify.live") toast(frame.data || {});
    }
  });
})();
