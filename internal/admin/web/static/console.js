// The oauthrelay console works without this script (plain forms and
// links); it only adds: a confirmation before a delete or a reload, an
// auto-refresh switch kept in this browser, and relative times that stay
// current ("3m ago").
"use strict";

(function () {
  // Confirmation: forms with data-confirm ask first.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      ev.preventDefault();
    }
  });

  // Relative times: every <span class="rel" data-at="RFC 3339">.
  function span(ms) {
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m";
    if (m < 48 * 60) return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
    var h = Math.floor(m / 60);
    return Math.floor(h / 24) + "d" + String(h % 24).padStart(2, "0") + "h";
  }
  function relative(at, now) {
    var d = at - now;
    if (Math.abs(d) < 1000) return "now";
    return d > 0 ? "in " + span(d) : span(-d) + " ago";
  }
  // The server's clock is the reference: its time when it rendered the
  // page is in <body data-now>, so a wrong clock on the operator's
  // machine does not skew the hints.
  var skew = 0;
  function updateTimes() {
    var now = Date.now() + skew;
    document.querySelectorAll(".rel[data-at]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("data-at"));
      if (!isNaN(at)) el.textContent = relative(at, now);
    });
  }

  // Auto-refresh: reloads the page every 30 s while switched on, unless
  // the operator is typing in a field. Only pages with the switch
  // (#autorefresh) reload: the server leaves it off History (expensive
  // searches) and off every error page.
  var refreshKey = "oauthrelay.autorefresh";
  var refreshEvery = 30000;
  var timer = null;
  function stored() {
    try { return window.localStorage.getItem(refreshKey) === "on"; } catch (e) { return false; }
  }
  function store(on) {
    try { window.localStorage.setItem(refreshKey, on ? "on" : "off"); } catch (e) { /* private mode */ }
  }
  function schedule(on) {
    if (timer) { window.clearTimeout(timer); timer = null; }
    if (!on) return;
    timer = window.setTimeout(function () {
      var active = document.activeElement;
      if (active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) {
        schedule(true);
        return;
      }
      window.location.reload();
    }, refreshEvery);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var served = Date.parse(document.body.getAttribute("data-now"));
    if (!isNaN(served)) skew = served - Date.now();
    updateTimes();
    window.setInterval(updateTimes, 15000);
    var box = document.getElementById("autorefresh");
    if (!box) return;
    box.closest(".js-only").hidden = false;
    box.checked = stored();
    schedule(box.checked);
    box.addEventListener("change", function () {
      store(box.checked);
      schedule(box.checked);
    });
  });
})();
