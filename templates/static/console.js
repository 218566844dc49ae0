/* The console's shared behaviour; no inline script anywhere (the pages' CSP forbids it).
 *
 * Live regions: an element with data-live="<id>" is replaced with the element of the same
 * data-live from a fresh copy of the page whenever /console/events says the app changed, so
 * new mail and replies appear without a reload. Focus and what is typed in forms stay put:
 * only live regions are swapped, and a region holding the focused element waits.
 * Copy buttons: <button data-copy="#id"> copies that element's text.
 */
(function () {
  "use strict";

  function refreshLive() {
    var regions = document.querySelectorAll("[data-live]");
    if (!regions.length) return;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        regions.forEach(function (old) {
          var key = old.getAttribute("data-live");
          var next = fresh.querySelector('[data-live="' + key + '"]');
          if (!next || old.contains(document.activeElement)) return;
          old.replaceWith(document.importNode(next, true));
        });
        document.dispatchEvent(new CustomEvent("console:refreshed"));
      })
      .catch(function () { /* the next change tries again */ });
  }

  function listen() {
    if (!document.querySelector("[data-live]") || !window.EventSource) return;
    var source = new EventSource("/console/events");
    source.addEventListener("change", refreshLive);
  }

  function copyButtons() {
    document.addEventListener("click", function (e) {
      var button = e.target.closest("[data-copy]");
      if (!button) return;
      var from = document.querySelector(button.getAttribute("data-copy"));
      if (!from || !navigator.clipboard) return;
      navigator.clipboard.writeText(from.textContent.trim()).then(function () {
        var label = button.textContent;
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
  }

  window.consoleRefresh = refreshLive;
  document.addEventListener("DOMContentLoaded", function () {
    listen();
    copyButtons();
  });
})();
