/* The book's search page (loaded on search.html only, before Sphinx's searchtools.js).
 *
 * 1. Ranking: a chapter comes first for its own subject. Sphinx scores a word in a page title
 *    (15) below a glossary entry or a section that repeats the query (up to 100), so "batch norm"
 *    listed the glossary and two other chapters before the batch normalisation chapter. A chapter
 *    page whose title holds every word of the query gets 1000 more: each query word must start a
 *    title word or be started by one ("norm" matches "normalisation", "vanishing" matches
 *    "vanish"), words of two letters or less ("of", "a") are ignored. Where several chapter titles
 *    hold the whole query, the shorter title ranks first ("vanishing gradients": "Why gradients
 *    vanish or explode" before "When gradients vanish into zero: low-precision training").
 * 2. Snippets show prose: the text a result quotes leaves out code cells, outputs, display
 *    equations, the page's own chrome (buttons, contents, previous/next links) and its title, which
 *    the result already shows.
 */
"use strict";

var Scorer = {
  // Sphinx's defaults (searchtools.js), unchanged
  objNameMatch: 11,
  objPartialMatch: 6,
  objPrio: { 0: 15, 1: 5, 2: -5 },
  objPrioDefault: 0,
  title: 15,
  partialTitle: 7,
  term: 5,
  partialTerm: 2,

  chapterBoost: 1000,

  words: (text) => (text || "").toLowerCase().split(/[^a-z0-9\u00C0-\u024F]+/).filter((w) => w.length > 2),

  related: (a, b) => Math.min(a.length, b.length) >= 3 && (a.startsWith(b) || b.startsWith(a)),

  score: (result) => {
    const [docname, title, anchor, , score] = result;
    const query = Scorer.words(new URLSearchParams(window.location.search).get("q"));
    if (!query.length || anchor || !docname.startsWith("chapters/")) return score;
    const titleWords = Scorer.words(title);
    const all = query.every((q) => titleWords.some((t) => Scorer.related(q, t)));
    // among chapters whose titles hold the whole query, the shorter title is more about it
    return all ? score + Scorer.chapterBoost - titleWords.length : score;
  },
};

/* Removed from the page text before Sphinx picks the snippet around the query's words. */
const BOOK_SNIPPET_SKIP = [
  ".bd-header-article", ".bd-sidebar-secondary", ".onlyprint", "h1", ".prev-next-area", "footer", "nav",
  "div.cell_input", "div.cell_output", "div.highlight", "pre", "div.math", ".toggle-details",
].join(",");

document.addEventListener("DOMContentLoaded", () => {
  if (typeof Search === "undefined" || !Search.htmlToText) return;
  const htmlToText = Search.htmlToText;
  Search.htmlToText = (htmlString, anchor) => {
    const doc = new DOMParser().parseFromString(htmlString, "text/html");
    doc.querySelectorAll(BOOK_SNIPPET_SKIP).forEach((el) => el.remove());
    // inline maths: its TeX without the \( \) delimiters
    doc.querySelectorAll("span.math").forEach((el) => {
      el.textContent = el.textContent.replace(/^\\\(|\\\)$/g, "");
    });
    return htmlToText(doc.documentElement.outerHTML, anchor).replace(/\s+/g, " ");
  };
});
