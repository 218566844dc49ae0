/* The conversation page (templates/console/conversation.html).
 *
 * Ctrl/Cmd+Enter in the reply box sends it. While one of the team's messages is still on its
 * way (a `.delivery.tone-wait` mark), the page refreshes its live regions every few seconds:
 * a delivery records no event in the app, so /console/events alone would not show it arrive.
 * The page works without this file: the reply/note switch is two radio buttons, its colour CSS.
 */
(function () {
  "use strict";

  var DELIVERY_POLL_MS = 5000;

  document.addEventListener("keydown", function (e) {
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey)) return;
    var text = document.getElementById("composer-text");
    if (!text || e.target !== text) return;
    e.preventDefault();
    if (text.value.trim()) document.getElementById("composer").requestSubmit();
  });

  setInterval(function () {
    if (document.hidden || !window.consoleRefresh) return;
    if (document.querySelector(".delivery.tone-wait")) window.consoleRefresh();
  }, DELIVERY_POLL_MS);
})();
