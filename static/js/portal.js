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
  // A swapped-in panel puts the cursor where the cashier types next (the amount, the name...).
  document.addEventListener("htmx:afterSettle", function (event) {
    var focus = event.detail.target && event.detail.target.querySelector("[autofocus]");
    if (focus) { focus.focus(); }
  });
})();
