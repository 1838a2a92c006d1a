// Small behaviours that must not live in inline scripts (the CSP forbids them).
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var printButton = event.target.closest("[data-print]");
    if (printButton) {
      event.preventDefault();
      window.print();
    }
  });
  // htmx does not swap error answers: say so, instead of leaving the cashier waiting.
  function showProblem(text) {
    var box = document.getElementById("request-problem");
    if (box) { box.textContent = text; box.hidden = false; }
  }
  document.addEventListener("htmx:beforeRequest", function () {
    var box = document.getElementById("request-problem");
    if (box) { box.hidden = true; }
  });
  document.addEventListener("htmx:sendError", function () {
    var box = document.getElementById("request-problem");
    if (box) { showProblem(box.dataset.offline); }
  });
  document.addEventListener("htmx:responseError", function (event) {
    var box = document.getElementById("request-problem");
    if (box) { showProblem(box.dataset.failed.replace("{code}", String(event.detail.xhr.status))); }
  });
  // A swapped-in panel puts the cursor where the cashier types next (the amount, the name...).
  document.addEventListener("htmx:afterSettle", function (event) {
    var focus = event.detail.target && event.detail.target.querySelector("[autofocus]");
    if (focus) { focus.focus(); }
  });
})();
