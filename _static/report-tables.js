/* Tables that the library's objects render (deepgrad.tables.html_table) sit in a wrapper that
   scrolls sideways when the table is wider than the column (on a phone). A scrolling region must
   be reachable by keyboard: each wrapper becomes a focusable, labelled region (its table's caption). */
(function () {
  "use strict";
  function mark() {
    Array.prototype.forEach.call(document.querySelectorAll("div.dg-table-wrap"), function (wrap) {
      if (wrap.hasAttribute("tabindex")) { return; }
      var caption = wrap.querySelector("caption");
      wrap.setAttribute("tabindex", "0");
      wrap.setAttribute("role", "region");
      wrap.setAttribute("aria-label", caption ? caption.textContent : "table");
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mark);
  } else {
    mark();
  }
})();
