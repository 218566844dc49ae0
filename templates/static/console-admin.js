/* Admin pages: a channel's end-to-end test, shown step by step while it runs.
 *
 * The page renders the steps known when it was served; while the test runs, this polls the
 * panel's data-url (JSON: running, steps, result) and redraws the list, then refreshes the
 * page's live regions (the channel's state) once the test is over. Text is set with
 * textContent only: a step's detail can quote what a remote server said.
 */
(function () {
  "use strict";

  var POLL_MS = 600;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function stepItem(step, running) {
    var state = running ? "running" : (step.ok ? "passed" : "failed");
    var li = el("li", "step " + state);
    var mark = el("span", "mark", running ? "…" : (step.ok ? "✓" : "✗"));
    mark.setAttribute("aria-hidden", "true");
    var body = el("div");
    body.appendChild(el("span", "step-name", step.label || step.name));
    body.appendChild(document.createTextNode(" "));
    if (!running) body.appendChild(el("span", "visually-hidden", state + ":"));
    body.appendChild(el("span", "step-detail", step.detail));
    if (step.hint) body.appendChild(el("p", "step-hint", "Hint: " + step.hint));
    li.appendChild(mark);
    li.appendChild(body);
    return li;
  }

  function draw(panel, state) {
    var list = el("ol", "steps");
    state.steps.forEach(function (step) { list.appendChild(stepItem(step, false)); });
    if (state.running) {
      list.appendChild(stepItem({ name: "Working", detail: "the next step is running" }, true));
    }
    var parts = [list];
    if (state.result) {
      parts.push(state.result.ok
        ? el("p", "result ok", "The channel works end to end: it is verified.")
        : el("p", "result problem", "The test failed: " + state.result.message));
    }
    panel.replaceChildren.apply(panel, parts);
    panel.setAttribute("data-running", state.running ? "true" : "false");
    var button = document.getElementById("run-test");
    if (button) {
      button.disabled = state.running;
      button.textContent = state.running ? "Testing…" : "Run test";
    }
  }

  function poll(panel) {
    fetch(panel.getAttribute("data-url"), {
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (state) {
        if (!state) return;
        draw(panel, state);
        if (state.running) {
          setTimeout(function () { poll(panel); }, POLL_MS);
        } else if (window.consoleRefresh) {
          window.consoleRefresh();
        }
      })
      .catch(function () { setTimeout(function () { poll(panel); }, POLL_MS * 3); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panel = document.getElementById("check-panel");
    if (panel && panel.getAttribute("data-running") === "true") poll(panel);
  });
})();
