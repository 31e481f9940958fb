// Copy to clipboard: the only script. The pages work without it; the Copy buttons stay
// hidden then.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy-from]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy-from"));
    if (!source || !navigator.clipboard) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.getAttribute("data-copy")).then(function () {
        button.setAttribute("data-copied", "yes");
      });
    });
  });
});
