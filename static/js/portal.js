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
  // After the lookup box opened a member, select its text so the next scan replaces it.
  document.body && document.body.addEventListener("lookup-done", function () {
    var box = document.getElementById("q");
    if (box) { box.select(); }
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    var focus = event.detail.target && event.detail.target.querySelector("[autofocus]");
    if (focus) { focus.focus(); }
  });
})();
