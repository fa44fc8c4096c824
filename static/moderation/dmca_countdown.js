// The DMCA case page's countdown to restoration. The deadline is computed by the server and rendered into
// data-countdown-to; data-server-now corrects for a client clock that is off.
(function () {
  "use strict";
  var el = document.querySelector("[data-countdown-to]");
  if (!el) return;
  var target = Date.parse(el.getAttribute("data-countdown-to"));
  var offset = Date.parse(el.getAttribute("data-server-now")) - Date.now();
  if (isNaN(target)) return;
  if (isNaN(offset)) offset = 0;
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function tick() {
    var left = Math.max(0, Math.floor((target - (Date.now() + offset)) / 1000));
    if (left === 0) {
      el.textContent = "Restoration is due: it happens within a minute.";
      return false;
    }
    var days = Math.floor(left / 86400), h = Math.floor(left % 86400 / 3600), m = Math.floor(left % 3600 / 60);
    el.textContent = days + " day" + (days === 1 ? "" : "s") + " " + pad(h) + ":" + pad(m) + ":" + pad(left % 60) + " until restoration";
    return true;
  }
  if (tick()) {
    var timer = setInterval(function () { if (!tick()) clearInterval(timer); }, 1000);
  }
})();
