/* Hover previews: pointing at (or tabbing to) a link to a glossary term, an equation or a figure
 * shows the term's definition, the equation or the figure with its caption in a small panel, so
 * the reader need not leave the paragraph. The target is read from the book's own pages (the
 * current page, or the linked one fetched from the same site: nothing leaves the site); equations
 * are typeset by the book's MathJax. Escape, moving away or leaving the link closes the panel.
 * Devices without hover (phones) keep plain links.
 */
"use strict";

(() => {
  if (!window.matchMedia || !window.matchMedia("(hover: hover)").matches) return;

  const pages = new Map(); // address -> Promise of the parsed page
  let panel = null;
  let current = null;
  let timer = null;

  const kindOf = (link) => {
    const hash = link.hash || "";
    if (hash.startsWith("#term-")) return "term";
    if (hash.startsWith("#equation-")) return "equation";
    if (link.querySelector(".std-numref") && /^#fig-/.test(hash)) return "figure";
    return null;
  };

  const page = (address) => {
    if (address === window.location.href.split("#")[0]) return Promise.resolve(document);
    if (!pages.has(address)) {
      pages.set(address, fetch(address)
        .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
        .then((text) => new DOMParser().parseFromString(text, "text/html")));
    }
    return pages.get(address);
  };

  const content = (doc, kind, id, address) => {
    const target = doc.getElementById(id);
    if (!target) return null;
    const box = document.createElement("div");
    if (kind === "term") {
      const term = document.createElement("p");
      term.className = "book-preview__title";
      term.textContent = target.textContent.replace(/#$/, "").trim();
      box.appendChild(term);
      const definition = target.nextElementSibling;
      if (definition) box.appendChild(document.importNode(definition, true));
    } else {
      box.appendChild(document.importNode(target, true));
    }
    box.querySelectorAll("[id]").forEach((el) => el.removeAttribute("id"));
    box.querySelectorAll("a.headerlink").forEach((el) => el.remove());
    box.querySelectorAll("img").forEach((img) => {
      img.src = new URL(img.getAttribute("src"), address).href;
      img.loading = "eager";
    });
    box.querySelectorAll("a[href]").forEach((a) => { a.tabIndex = -1; });
    return box;
  };

  const place = (link) => {
    const r = link.getBoundingClientRect();
    const width = Math.min(480, document.documentElement.clientWidth - 16);
    panel.style.width = width + "px";
    const left = Math.max(8, Math.min(r.left + window.scrollX, window.scrollX + document.documentElement.clientWidth - width - 8));
    panel.style.left = left + "px";
    const below = r.bottom + window.scrollY + 6;
    panel.style.top = below + "px";
    const height = panel.offsetHeight;
    if (r.bottom + height + 6 > window.innerHeight && r.top - height - 6 > 0) {
      panel.style.top = (r.top + window.scrollY - height - 6) + "px";
    }
  };

  const hide = () => {
    clearTimeout(timer);
    if (current) current.removeAttribute("aria-describedby");
    current = null;
    if (panel) { panel.hidden = true; panel.replaceChildren(); }
  };

  const show = (link) => {
    const kind = kindOf(link);
    const [address, hash] = link.href.split("#");
    page(address).then((doc) => {
      if (current !== link) return;
      const box = content(doc, kind, decodeURIComponent(hash), address);
      if (!box) return;
      panel.replaceChildren(box);
      panel.dataset.kind = kind;
      panel.hidden = false;
      link.setAttribute("aria-describedby", panel.id);
      // maths read from another page is still TeX: typeset it (the current page's is already)
      const typeset = doc !== document && window.MathJax && MathJax.typesetPromise
        ? MathJax.typesetPromise([panel]) : Promise.resolve();
      typeset.then(() => { if (current === link) place(link); });
      place(link);
    }).catch(() => {});
  };

  const enter = (event) => {
    const link = event.target.closest && event.target.closest("article a.reference.internal");
    if (!link || !kindOf(link) || link === current) return;
    hide();
    current = link;
    timer = setTimeout(() => show(link), event.type === "focusin" ? 0 : 250);
  };

  const leave = (event) => {
    if (!current) return;
    const to = event.relatedTarget;
    if (to && (current.contains(to) || panel.contains(to))) return;
    hide();
  };

  document.addEventListener("DOMContentLoaded", () => {
    panel = document.createElement("div");
    panel.id = "book-preview";
    panel.className = "book-preview";
    panel.setAttribute("role", "tooltip");
    panel.hidden = true;
    document.body.appendChild(panel);
    document.addEventListener("mouseover", enter);
    document.addEventListener("focusin", enter);
    document.addEventListener("mouseout", leave);
    document.addEventListener("focusout", leave);
    panel.addEventListener("mouseleave", (event) => leave(event));
    document.addEventListener("keydown", (event) => { if (event.key === "Escape") hide(); });
  });
})();
