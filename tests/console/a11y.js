// In-page checks of tests/console/test_accessibility.py (evaluated by Playwright).

function describe(el) {
  if (!el) return "(none)";
  var text = (el.innerText || el.value || el.getAttribute("aria-label") || "").trim();
  return "<" + el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.getAttribute("name") ? " name=" + el.getAttribute("name") : "") +
    (el.className && typeof el.className === "string" ? " ." + el.className.split(" ").join(".") : "") +
    "> " + text.slice(0, 40);
}

function shown(el) {
  if (!el.checkVisibility({ opacityProperty: true, visibilityProperty: true })) return false;
  var r = el.getBoundingClientRect();
  return r.width > 1 && r.height > 1;
}

// --- accessible names --------------------------------------------------------------------

function unlabelled() {
  return Array.from(document.querySelectorAll("input, select, textarea"))
    .filter(function (e) { return e.type !== "hidden"; })
    .filter(function (e) {
      var byLabel = Array.from(e.labels || []).some(function (l) { return l.textContent.trim(); });
      var by = (e.getAttribute("aria-labelledby") || "").split(/\s+/).filter(Boolean)
        .some(function (id) { var x = document.getElementById(id); return x && x.textContent.trim(); });
      var named = (e.getAttribute("aria-label") || e.getAttribute("title") || "").trim();
      var button = ["submit", "button", "reset"].indexOf(e.type) >= 0 && e.value;
      return !(byLabel || by || named || button);
    })
    .map(describe);
}

// --- contrast ------------------------------------------------------------------------------

function rgba(css) {
  var m = /rgba?\(([^)]+)\)/.exec(css);
  if (!m) return null;
  var p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
}

function over(top, bottom) {
  var a = top[3];
  return [0, 1, 2].map(function (i) { return top[i] * a + bottom[i] * (1 - a); }).concat([1]);
}

function backdrop(el) {
  var chain = [];
  for (var e = el; e; e = e.parentElement) chain.unshift(e);
  var bg = [255, 255, 255, 1];
  chain.forEach(function (e) {
    var c = rgba(getComputedStyle(e).backgroundColor);
    if (c && c[3] > 0) bg = over(c, bg);
  });
  return bg;
}

function luminance(c) {
  var f = function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
}

function lowContrast() {
  var bad = [];
  var seen = new Set();
  var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    var node = walker.currentNode;
    var el = node.parentElement;
    if (!node.data.trim() || !el || seen.has(el) || el.closest("option, script, style")) continue;
    seen.add(el);
    if (!shown(el)) continue;
    var style = getComputedStyle(el);
    var bg = backdrop(el);
    var fg = rgba(style.color);
    if (!fg) { bad.push("unreadable colour " + style.color + " " + describe(el)); continue; }
    fg = over(fg, bg);
    var a = luminance(fg), b = luminance(bg);
    var ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) {
      bad.push(ratio.toFixed(2) + ": " + style.color + " on rgb(" +
        bg.slice(0, 3).map(Math.round).join(",") + ") " + JSON.stringify(node.data.trim().slice(0, 30)) +
        " in " + describe(el));
    }
  }
  return bad;
}

function checks() {
  return { "no accessible name": unlabelled(), "contrast below 4.5": lowContrast() };
}

// --- keyboard ------------------------------------------------------------------------------

var FOCUSABLE = "a[href], button:not([disabled]), input:not([type=hidden]):not([disabled])," +
  " select:not([disabled]), textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])";

function markFocusable() {
  var all = Array.from(document.querySelectorAll(FOCUSABLE)).filter(shown);
  all.forEach(function (e, i) { e.setAttribute("data-a11y", String(i)); });
  return all.length;
}

function ratio(a, b) {
  var x = luminance(a), y = luminance(b);
  return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
}

// Where focus is, and whether it shows: an outline (on the element or a pseudo-element drawn
// over it, as the list rows do) or a ring, whose colour stands out 3:1 from what is around it
// (WCAG 1.4.11, non-text contrast): the parent's backdrop for an outline drawn outside.
function focusStop() {
  var el = document.activeElement;
  if (!el || el === document.body) return null;
  var index = el.hasAttribute("data-a11y") ? Number(el.getAttribute("data-a11y")) : -1;
  var outlined = function (s) { return s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0; };
  // A visually hidden radio or checkbox shows its focus on its label, or around its group.
  if (!shown(el) && el.labels && el.labels.length) {
    el = el.labels[0];
    for (var up = el, i = 0; up && i < 3; up = up.parentElement, i++) {
      if (outlined(getComputedStyle(up))) { el = up; break; }
    }
  }
  var marks = [null, "::before", "::after"].map(function (p) { return getComputedStyle(el, p); });
  var drawn = marks.filter(outlined);
  if (!drawn.length) {
    var ring = marks[0].boxShadow && marks[0].boxShadow !== "none";
    return [index, ring ? "" : "no outline or ring"];
  }
  var s = drawn[0];
  var around = parseFloat(s.outlineOffset) >= 0 && el.parentElement ? el.parentElement : el;
  var bg = backdrop(around);
  var c = ratio(over(rgba(s.outlineColor), bg), bg);
  return [index, c >= 3 ? "" : "outline " + s.outlineColor + " only " + c.toFixed(2) + ":1"];
}

function missed(order) {
  var reached = new Set(order);
  var groups = new Set();
  order.forEach(function (i) {
    var e = document.querySelector('[data-a11y="' + i + '"]');
    if (e && e.type === "radio") groups.add(e.form + ":" + e.name);
  });
  return Array.from(document.querySelectorAll("[data-a11y]"))
    .filter(function (e) { return !reached.has(Number(e.getAttribute("data-a11y"))); })
    // One radio of a group is a Tab stop; the arrow keys choose within it.
    .filter(function (e) { return !(e.type === "radio" && groups.has(e.form + ":" + e.name)); })
    .map(describe);
}
