// nurture dashboard: small enhancements; every page reads without this script.
"use strict";
document.addEventListener("submit", function (e) {
  var button = e.submitter;
  if (button && button.classList.contains("confirm")) {
    if (!window.confirm(button.getAttribute("data-confirm") || "Are you sure?")) {
      e.preventDefault();
    }
  }
});
