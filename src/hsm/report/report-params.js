// hsm report: the parameter view (metrics.json values against parameters).
// Defines one global, hsmDrawParams(host, R), called by report.js with its helpers in R.
var hsmDrawParams = (function () {
  "use strict";
  var TABLE_ROWS = 200;
  var R = null;

  function drawParams(host) {
    var M = R.D.metrics;
    if (!M) {
      host.appendChild(R.h("p", { "class": "empty", text: "No task wrote a metrics.json. A " +
        "script that writes a JSON object of its results to metrics.json in its task folder " +
        "($HSM_TASK_DIR) gets a table and a plot of parameters against those results here." }));
      return;
    }
    var rows = M.rows.map(function (r) {
      var t = R.tasksByNumber[r.task];
      return { task: r.task, status: r.status, params: t ? t.params : {}, metrics: r.metrics };
    });
    var numericMetrics = M.metrics.filter(function (m) {
      return rows.some(function (r) { return typeof r.metrics[m] === "number"; });
    });
    var controls = R.h("div", { "class": "controls" });
    var colourBy = R.h("select", { id: "colour-by" }, numericMetrics.map(function (m) {
      return R.h("option", { value: m, text: m });
    }));
    if (numericMetrics.length) controls.appendChild(R.h("label", null, "colour by ", colourBy));
    host.appendChild(controls);
    var plotBox = R.h("div", { "class": "chart", id: "pc-plot" });
    host.appendChild(plotBox);
    function redraw() {
      plotBox.textContent = "";
      plotBox.appendChild(parallelPlot(M, rows, numericMetrics, colourBy.value));
    }
    colourBy.addEventListener("change", redraw);
    redraw();
    host.appendChild(metricsTable(M, rows));
  }
  function axisOf(name, values) {
    var present = values.filter(function (v) { return v !== null && v !== undefined; });
    if (present.length && present.every(function (v) { return typeof v === "number"; })) {
      var lo = Math.min.apply(null, present), hi = Math.max.apply(null, present);
      if (lo === hi) { lo -= 1; hi += 1; }
      return { name: name, numeric: true, lo: lo, hi: hi,
        pos: function (v) { return typeof v === "number" ? (v - lo) / (hi - lo) : null; } };
    }
    var cats = [];
    present.forEach(function (v) { var k = R.fmtValue(v); if (cats.indexOf(k) < 0) cats.push(k); });
    cats.sort();
    return { name: name, numeric: false, cats: cats, pos: function (v) {
      if (v === null || v === undefined) return null;
      var i = cats.indexOf(R.fmtValue(v));
      return cats.length === 1 ? 0.5 : i / (cats.length - 1);
    } };
  }
  function colour(f) {  // dark blue → teal → orange: readable on white
    var stops = [[44, 62, 153], [31, 158, 137], [232, 116, 28]];
    f = Math.max(0, Math.min(1, f)) * (stops.length - 1);
    var i = Math.min(Math.floor(f), stops.length - 2), u = f - i;
    var c = stops[i].map(function (a, k) { return Math.round(a + (stops[i + 1][k] - a) * u); });
    return "rgb(" + c.join(",") + ")";
  }
  function parallelPlot(M, rows, numericMetrics, colourMetric) {
    var names = M.varying.map(function (p) { return { kind: "params", name: p }; })
      .concat(M.metrics.map(function (m) { return { kind: "metrics", name: m }; })).slice(0, 14);
    var axes = names.map(function (n) {
      var ax = axisOf(n.name, rows.map(function (r) { return r[n.kind][n.name]; }));
      ax.kind = n.kind;
      return ax;
    });
    var width = Math.max(700, Math.min(1300, 130 * axes.length + 80)), height = 320;
    var top = 34, bottom = 30, left = 60, right = 60;
    var gap = axes.length > 1 ? (width - left - right) / (axes.length - 1) : 0;
    var svg = R.s("svg", { "class": "parallel", width: width, height: height,
      viewBox: "0 0 " + width + " " + height });
    var y = function (f) { return top + (1 - f) * (height - top - bottom); };
    var cAxis = colourMetric ? axisOf(colourMetric, rows.map(function (r) {
      return r.metrics[colourMetric]; })) : null;
    var lines = R.s("g", { "class": "pc-lines" });
    rows.forEach(function (r, ri) {
      var d = "", pen = false;
      axes.forEach(function (ax, i) {
        var f = ax.pos(r[ax.kind][ax.name]);
        if (f === null) { pen = false; return; }
        d += (pen ? "L" : "M") + (left + i * gap).toFixed(1) + " " + y(f).toFixed(1);
        pen = true;
      });
      if (!d) return;
      var f = cAxis ? cAxis.pos(r.metrics[colourMetric]) : null;
      var line = R.s("path", { "class": "pc-line" + (r.status === "failed" ? " failed" : ""),
        d: d, "data-task": r.task, "data-row": ri });
      line.style.stroke = f === null ? "#9aa1aa" : colour(f);
      lines.appendChild(line);
    });
    svg.appendChild(lines);
    axes.forEach(function (ax, i) {
      var xa = left + i * gap, g = R.s("g", { "class": "pc-axis" });
      g.appendChild(R.s("line", { "class": "axis", x1: xa, x2: xa, y1: top, y2: height - bottom }));
      g.appendChild(R.s("text", { "class": "axis-name", x: xa, y: 14, "text-anchor": "middle",
        text: ax.name }));
      g.appendChild(R.s("text", { x: xa, y: 26, "text-anchor": "middle",
        text: ax.kind === "params" ? "parameter" : "metric" }));
      var labels = ax.numeric ? [[0, R.fmtNum(ax.lo)], [0.5, R.fmtNum((ax.lo + ax.hi) / 2)],
        [1, R.fmtNum(ax.hi)]] : ax.cats.slice(0, 12).map(function (c, k) {
        return [ax.cats.length === 1 ? 0.5 : k / (ax.cats.length - 1), c];
      });
      labels.forEach(function (lb) {
        var text = String(lb[1]);
        g.appendChild(R.s("text", { x: xa + 4, y: y(lb[0]) + 4,
          text: text.length > 18 ? text.slice(0, 17) + "…" : text }));
      });
      svg.appendChild(g);
    });
    lines.addEventListener("mouseover", function (e) {
      var n = e.target.getAttribute("data-task");
      if (n !== null) R.showTask(+n, null, false);
    });
    lines.addEventListener("click", function (e) {
      var n = e.target.getAttribute("data-task");
      if (n !== null) R.pin(+n, null, e.target);
    });
    return svg;
  }
  function compare(a, b) {
    var na = a === null || a === undefined, nb = b === null || b === undefined;
    if (na || nb) return na === nb ? 0 : na ? 1 : -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return R.fmtValue(a).localeCompare(R.fmtValue(b), undefined, { numeric: true });
  }
  function metricsTable(M, rows) {
    var cols = [{ kind: "task", name: "task" }, { kind: "status", name: "status" }]
      .concat(M.params.map(function (p) { return { kind: "params", name: p }; }))
      .concat(M.metrics.map(function (m) { return { kind: "metrics", name: m }; }));
    var value = function (r, c) { return c.kind === "task" ? r.task : c.kind === "status" ?
      r.status : r[c.kind][c.name]; };
    var box = R.h("div", { "class": "metrics-box" });
    var sortCol = null, desc = false, limit = TABLE_ROWS;
    var thead = R.h("thead"), tbody = R.h("tbody");
    var table = R.h("table", { "class": "data sortable metrics-table" }, thead, tbody);
    var more = R.h("p", { "class": "hint" });
    var headRow = R.h("tr", null, cols.map(function (c, i) {
      return R.h("th", { "class": c.kind === "metrics" ? "metric" : c.kind === "params" ?
        "param" : null, "data-col": i, title: c.kind === "metrics" ? "metric" : c.kind,
        text: c.name, onclick: function () {
          desc = sortCol === i ? !desc : false;
          sortCol = i;
          fill();
        } });
    }));
    thead.appendChild(headRow);
    function fill() {
      var sorted = rows.slice();
      if (sortCol !== null) {
        var c = cols[sortCol];
        sorted.sort(function (a, b) {
          var r = compare(value(a, c), value(b, c));
          return desc ? -r : r;
        });
      }
      Array.prototype.forEach.call(headRow.children, function (th, i) {
        th.classList.toggle("sorted-asc", i === sortCol && !desc);
        th.classList.toggle("sorted-desc", i === sortCol && desc);
      });
      tbody.textContent = "";
      sorted.slice(0, limit).forEach(function (r) {
        tbody.appendChild(R.h("tr", { "data-task": r.task }, cols.map(function (c) {
          if (c.kind === "task") return R.h("td", { "class": "num" }, R.taskLink(r.task));
          var v = value(r, c);
          return R.cell(R.fmtValue(v === undefined ? null : v) === "null" ? "" : R.fmtValue(v),
            typeof v === "number" ? "num" : null);
        })));
      });
      more.textContent = "";
      if (sorted.length > limit) {
        more.appendChild(document.createTextNode("Showing " + limit + " of " + sorted.length +
          " rows (sorted by the column you click). "));
        more.appendChild(R.h("button", { type: "button", text: "show all", onclick: function () {
          limit = Infinity; fill(); } }));
      }
    }
    fill();
    box.appendChild(table);
    box.appendChild(more);
    return box;
  }


  return function (host, helpers) {
    R = helpers;
    drawParams(host);
  };
})();
