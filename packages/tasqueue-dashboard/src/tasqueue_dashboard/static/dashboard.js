// Live refresh for tasqueue-dashboard: one timer asks every [data-live] section to refresh itself
// (htmx swaps in the fragment the server renders from its shared cache). Nothing refreshes while
// the tab is hidden, while "Live" is off, or while the operator has jobs ticked in a section.
(function () {
  "use strict";
  var every = Number(document.body.dataset.refresh) || 2000;
  var toggle = document.getElementById("live");
  var live = localStorage.getItem("tasqueue-dashboard-live") !== "off";
  if (toggle) {
    toggle.checked = live;
    toggle.addEventListener("change", function () {
      live = toggle.checked;
      localStorage.setItem("tasqueue-dashboard-live", live ? "on" : "off");
      if (live) tick();
    });
  }

  function busy(section) {
    return section.querySelector("input[type=checkbox]:checked") !== null || section.contains(document.activeElement);
  }

  function tick() {
    if (!live || document.hidden || !window.htmx) return;
    document.querySelectorAll("[data-live]").forEach(function (section) {
      if (!busy(section)) window.htmx.trigger(section, "tq:tick");
    });
  }

  function selection() {
    document.querySelectorAll("form").forEach(function (form) {
      var ticked = form.querySelector("input[name=ids]:checked") !== null;
      form.querySelectorAll("[data-needs-selection]").forEach(function (b) { b.disabled = !ticked; });
    });
  }

  setInterval(tick, every);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) tick(); });
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t.matches && t.matches("[data-select-all]")) {
      t.closest("form").querySelectorAll("input[name=ids]").forEach(function (c) { c.checked = t.checked; });
    }
    selection();
  });
  // A refresh that was under way when the operator ticked a job is dropped, not swapped over the tick.
  document.body.addEventListener("htmx:beforeSwap", function (e) {
    var target = e.detail.target;
    if (target && target.hasAttribute("data-live") && busy(target)) e.detail.shouldSwap = false;
  });
  document.body.addEventListener("htmx:afterSwap", selection);
  selection();
})();
