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
 * 3. A chapter's title once. A query that matches a page's title as a whole is listed as
 *    "page title > matched title", unless the two are equal; in a numbered book the page title
 *    carries its number ("1. Backpropagation: ..."), the matched title does not, so a chapter found
 *    by its own title read "1. Backpropagation: ... > Backpropagation: ..." and was listed a second
 *    time for the same words in its text. Such a result keeps the page title alone, and the
 *    results are de-duplicated again as Sphinx does (the higher score kept).
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

/* A page title of the index as text, without its section number ("1. ") or markup. */
const bookPlainTitle = (html) => {
  const doc = new DOMParser().parseFromString(html, "text/html");
  doc.querySelectorAll(".section-number").forEach((el) => el.remove());
  return doc.body.textContent.trim();
};

/* Results ([docname, title, anchor, descr, score, filename], best last) with a page's own title once. */
const bookOwnTitleOnce = (results) => {
  const titles = Search._index.titles;
  const docNames = Search._index.docnames;
  const fixed = results.map((result) => {
    const own = titles[docNames.indexOf(result[0])];
    if (own === undefined || result[1] !== `${own} > ${bookPlainTitle(own)}`) return result;
    const copy = result.slice();
    copy[1] = own;
    return copy;
  });
  const seen = new Set();
  return fixed.reverse().filter((result) => {
    const key = result.slice(0, 4).concat([result[5]]).map(String).join(",");
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  }).reverse();
};

document.addEventListener("DOMContentLoaded", () => {
  if (typeof Search === "undefined" || !Search.htmlToText) return;
  const performSearch = Search._performSearch;
  if (performSearch) Search._performSearch = (...args) => bookOwnTitleOnce(performSearch(...args));
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
