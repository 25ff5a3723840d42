/* The gradient-flow explorer (deepgrad.explorer.GradientFlow): a select and two sliders redraw the
   per-layer profile of the back-propagated gradient, measured (points) and predicted by the
   mean-field recursion (line), from the numbers the chapter stored in the page
   (<script type="application/json" class="dg-explorer-data">). Plain JavaScript and SVG; nothing is
   fetched. Runs on every page, and acts only where a .dg-explorer element exists. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  // the drawing's size in its own units: narrower on a phone, so that its text stays legible
  function isNarrow(root) {
    var width = root.clientWidth;  // 0 while the page is laid out or the figure hidden: the wide layout
    return width > 0 && width < 520;
  }
  var SUP = { "-": "\u207b", "0": "\u2070", "1": "\u00b9", "2": "\u00b2", "3": "\u00b3", "4": "\u2074",
              "5": "\u2075", "6": "\u2076", "7": "\u2077", "8": "\u2078", "9": "\u2079" };
  var counter = 0;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    for (var key in attrs) { node.setAttribute(key, attrs[key]); }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function html(tag, attrs, parent, text) {
    var node = document.createElement(tag);
    for (var key in attrs) { node.setAttribute(key, attrs[key]); }
    if (text !== undefined) { node.textContent = text; }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function power(k) {
    if (k === 0) { return "1"; }
    return "10" + String(k).split("").map(function (c) { return SUP[c]; }).join("");
  }

  function scale(x) {
    return (Math.round(x * 1000) / 1000).toString();
  }

  function build(root) {
    var source = root.querySelector("script.dg-explorer-data");
    if (!source || root.dataset.ready) { return; }
    var data = JSON.parse(source.textContent);
    root.dataset.ready = "1";
    var id = "dg-explorer-" + (++counter);
    var fallback = root.querySelector(".dg-explorer-fallback");
    if (fallback) { fallback.hidden = true; }

    var controls = html("div", { "class": "dg-explorer-controls" }, root);
    var first = html("span", { "class": "dg-explorer-slider" }, controls);
    html("label", { "for": id + "-act" }, first, "Activation ");
    var act = html("select", { id: id + "-act" }, first);
    data.activations.forEach(function (name, i) { html("option", { value: String(i) }, act, name); });
    function slider(label, values, format) {
      var wrap = html("span", { "class": "dg-explorer-slider" }, controls);
      html("label", { "for": id + "-" + label.key }, wrap).innerHTML = label.html + " ";
      var input = html("input", { type: "range", id: id + "-" + label.key, min: "0", max: String(values.length - 1),
                                  step: "1" }, wrap);
      var out = html("output", { "for": id + "-" + label.key, "aria-hidden": "true" }, wrap);
      input.sync = function () {
        var text = format(values[Number(input.value)]);
        out.textContent = text;
        input.setAttribute("aria-valuetext", text);
      };
      return input;
    }
    var sw = slider({ key: "scale", html: "Weight scale \u03c3<sub>w</sub>" }, data.scales, scale);
    var depth = slider({ key: "depth", html: "Hidden layers" }, data.depths, String);
    act.value = String(data.default[0]);
    sw.value = String(data.default[1]);
    depth.value = String(data.default[2]);

    var svg = el("svg", { viewBox: "0 0 640 320", role: "img", "class": "dg-explorer-plot",
                          "aria-labelledby": id + "-title " + id + "-desc" }, root);
    var title = el("title", { id: id + "-title" }, svg);
    var desc = el("desc", { id: id + "-desc" }, svg);
    var readout = html("p", { "class": "dg-explorer-readout", "aria-live": "polite" }, root);

    function draw() {
      var a = Number(act.value), s = Number(sw.value), d = Number(depth.value);
      var narrow = isNarrow(root);
      var W = narrow ? 400 : 640, H = narrow ? 330 : 320;
      var M = { left: 58, right: 16, top: narrow ? 48 : 30, bottom: 44 };
      drawnNarrow = narrow;
      svg.setAttribute("viewBox", "0 0 " + W + " " + H);
      sw.sync(); depth.sync();
      var point = data.points[a + "," + s + "," + d];
      var L = data.depths[d], name = data.activations[a];
      var values = point.m.concat(point.p).filter(function (v) { return v !== null; });
      var lo = Math.min(-1, Math.floor(Math.min.apply(null, values.concat([0]))));
      var hi = Math.max(1, Math.ceil(Math.max.apply(null, values.concat([0]))));
      var x = function (l) { return M.left + (L === 1 ? 0.5 : (l - 1) / (L - 1)) * (W - M.left - M.right); };
      var y = function (v) { return M.top + (hi - v) / (hi - lo) * (H - M.top - M.bottom); };
      while (svg.lastChild && svg.lastChild !== desc) { svg.removeChild(svg.lastChild); }
      var color = data.colors[name] || "#0072B2";

      var axes = el("g", { "class": "dg-axes" }, svg);
      var step = Math.max(1, Math.ceil((hi - lo) / 6));
      for (var k = Math.ceil(lo / step) * step; k <= hi; k += step) {
        el("line", { x1: M.left, x2: W - M.right, y1: y(k), y2: y(k), "class": "dg-grid" }, axes);
        el("text", { x: M.left - 6, y: y(k) + 4, "text-anchor": "end" }, axes).textContent = power(k);
      }
      var xstep = L <= 10 ? 1 : L <= 20 ? 5 : 10;
      for (var l = 1; l <= L; l += (l === 1 && xstep > 1 ? xstep - 1 : xstep)) {
        el("text", { x: x(l), y: H - M.bottom + 16, "text-anchor": "middle" }, axes).textContent = String(l);
      }
      el("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom, "class": "dg-axis" }, axes);
      el("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, "class": "dg-axis" }, axes);
      el("text", { x: (M.left + W - M.right) / 2, y: H - 6, "text-anchor": "middle" }, axes)
        .textContent = "layer l (1 = nearest the input)";
      el("text", { x: 14, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle",
                   transform: "rotate(-90 14 " + (M.top + H - M.bottom) / 2 + ")" }, axes)
        .textContent = "\u03b4 relative to layer " + L;
      var t = Math.log10(data.threshold);
      if (t >= lo && t <= hi) {
        el("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t), "class": "dg-threshold" }, axes);
        el("text", { x: W - M.right - 4, y: y(t) - 4, "text-anchor": "end", "class": "dg-small" }, axes)
          .textContent = "vanishing threshold " + data.threshold;
      }

      var path = "", pen = false;
      point.p.forEach(function (v, i) {
        if (v === null) { pen = false; return; }
        path += (pen ? "L" : "M") + x(i + 1).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
      });
      el("path", { d: path, "class": "dg-predicted", stroke: color }, svg);
      var dots = el("g", { "class": "dg-measured", fill: color, "data-values": JSON.stringify(point.m) }, svg);
      point.m.forEach(function (v, i) {
        if (v !== null) { el("circle", { cx: x(i + 1), cy: y(v), r: L > 20 ? 2.6 : 3.4 }, dots); }
      });
      var legend = el("g", { "class": "dg-legend" }, svg);
      el("line", { x1: M.left + 10, x2: M.left + 34, y1: 14, y2: 14, stroke: color, "class": "dg-predicted" }, legend);
      el("text", { x: M.left + 40, y: 18 }, legend).textContent = "mean-field prediction";
      var lx = narrow ? M.left + 22 : M.left + 222, ly = narrow ? 34 : 14;
      el("circle", { cx: lx, cy: ly, r: 3.4, fill: color }, legend);
      el("text", { x: lx + 10, y: ly + 4 }, legend).textContent =
        "measured (" + data.networks + " networks of width " + data.width + ")";

      var sentence = name + ", \u03c3_w = " + scale(data.scales[s]) + ", " + L + " layers: \u03b4 at layer 1 is " +
        point.f[0] + " \u00d7 layer " + L + "'s (measured); the recursion predicts " + point.f[1] + ".";
      title.textContent = "Back-propagated gradient by layer: " + name + ", \u03c3_w = " + scale(data.scales[s]) +
        ", " + L + " hidden layers";
      desc.textContent = "Log-scale plot of the root mean square of \u03b4 at each layer relative to the last " +
        "hidden layer, measured and predicted. " + sentence;
      readout.textContent = sentence;
      root.dataset.position = [a, s, d].join(",");
    }
    var drawnNarrow = null;  // the layout of the last drawing, per explorer
    window.addEventListener("resize", function () {
      if (isNarrow(root) !== drawnNarrow) { draw(); }
    });
    act.addEventListener("change", draw);
    sw.addEventListener("input", draw);
    depth.addEventListener("input", draw);
    draw();
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll(".dg-explorer"), build);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
