/* Live session page: connection state; classroom widgets attach to the same socket. */
(function () {
  "use strict";
  var root = document.querySelector(".room");
  if (!root) return;
  var stateEl = root.querySelector("[data-testid=connection-state]");
  var labels = {connecting: "Connecting…", reconnecting: "Reconnecting…", live: "Connected", closed: "Disconnected"};
  var sock = new AulaSocket("/ws/v1/sessions/" + root.dataset.sessionId + "/", {
    onState: function (state, detail) {
      var text = labels[state] || state;
      if (state === "closed" && detail && detail.reason) text = "Disconnected (" + detail.reason + ")";
      stateEl.textContent = text;
      stateEl.dataset.state = state;
    },
    onEvent: function (frame) {
      if (frame.type === "session.welcome") {
        sock.lastSeq = frame.data.last_seq;
        stateEl.textContent = "Connected";
        stateEl.dataset.state = "live";
      }
      document.dispatchEvent(new CustomEvent("aula:event", {detail: frame}));
    }
  });
  window.aulaSession = sock;
})();
