// hsm report: draws the charts and tables from the embedded JSON model.
// No network, no libraries: DOM and SVG only. Text goes in through textContent only.
// report-params.js (the parameter view, hsmDrawParams) comes before this file in the page.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("hsm-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var OUTCOMES = ["completed", "failed", "lost", "cancelled", "running"];
  var tasksByNumber = {};
  D.tasks.forEach(function (t) { tasksByNumber[t.number] = t; });
  var barsByTask = {};
  D.bars.forEach(function (b, i) { barsByTask[b.task] = i; });  // the latest attempt wins

  // -- small helpers -------------------------------------------------------------------
  function setAttrs(node, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") node.textContent = String(v);
      else if (typeof v === "function") node.addEventListener(k.replace(/^on/, ""), v);
      else node.setAttribute(k, String(v));
    });
  }
  function addKids(node, kids) {
    kids.forEach(function (k) {
      if (k === null || k === undefined || k === false) return;
      if (Array.isArray(k)) addKids(node, k);
      else node.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
    });
  }
  function h(tag, attrs) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    addKids(node, Array.prototype.slice.call(arguments, 2));
    return node;
  }
  function s(tag, attrs) {
    var node = document.createElementNS(SVGNS, tag);
    setAttrs(node, attrs);
    addKids(node, Array.prototype.slice.call(arguments, 2));
    return node;
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function fmtTime(t) {
    if (t === null || t === undefined) return "–";
    return new Date((t + D.utc_offset) * 1000).toISOString().replace("T", " ").slice(0, 19);
  }
  function fmtClock(t, withDate) {
    var iso = new Date((t + D.utc_offset) * 1000).toISOString();
    return withDate ? iso.slice(5, 10) + " " + iso.slice(11, 16) : iso.slice(11, 19);
  }
  function fmtDur(sec) {
    if (sec === null || sec === undefined) return "–";
    if (sec < 10) return sec.toFixed(1) + "s";
    sec = Math.round(sec);
    var d = Math.floor(sec / 86400), hh = Math.floor(sec % 86400 / 3600);
    var m = Math.floor(sec % 3600 / 60), ss = sec % 60;
    if (d) return d + "d " + hh + "h " + pad(m) + "m";
    if (hh) return hh + "h " + pad(m) + "m";
    if (m) return m + "m " + pad(ss) + "s";
    return ss + "s";
  }
  function fmtBytes(b) {
    if (b === null || b === undefined) return "–";
    var units = ["B", "kB", "MB", "GB", "TB", "PB"], i = 0;
    while (Math.abs(b) >= 1000 && i < units.length - 1) { b /= 1000; i++; }
    return (i ? b.toFixed(b < 10 ? 2 : 1) : String(b)) + " " + units[i];
  }
  function fmtNum(v) {
    if (typeof v !== "number") return v === null || v === undefined ? "" : String(v);
    if (Number.isInteger(v)) return String(v);
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(+v.toPrecision(5));
  }
  function fmtValue(v) {
    if (typeof v === "string") return v;
    if (typeof v === "number") return fmtNum(v);
    return JSON.stringify(v);
  }
  function fmtPct(x) { return (x * 100).toFixed(x > 0 && x < 0.1 ? 1 : 0) + "%"; }
  function niceStep(span, target) {
    var raw = span / Math.max(1, target), p = Math.pow(10, Math.floor(Math.log10(raw)));
    var m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  var TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
    21600, 43200, 86400, 172800, 604800];
  function timeTicks(t0, t1, target) {
    var span = Math.max(t1 - t0, 1), step = TIME_STEPS[TIME_STEPS.length - 1];
    for (var i = 0; i < TIME_STEPS.length; i++) {
      if (span / TIME_STEPS[i] <= target) { step = TIME_STEPS[i]; break; }
    }
    var out = [], first = Math.ceil((t0 + D.utc_offset) / step) * step - D.utc_offset;
    for (var t = first; t <= t1; t += step) out.push(t);
    return { ticks: out, withDate: span > 86400 };
  }
  function cell(value, cls) { return h("td", { "class": cls || null }, value); }
  function guarded(id, fn) {
    var host = document.getElementById(id);
    try { fn(host); } catch (err) {
      host.appendChild(h("p", { "class": "section-error",
        text: "This part of the report could not be drawn: " + err }));
      var errs = document.body.dataset.errors ? document.body.dataset.errors + "; " : "";
      document.body.dataset.errors = errs + id + ": " + err;
    }
  }
  var W0 = D.window[0], W1 = Math.max(D.window[1], D.window[0] + 1);
  function timeScale(x0, width) {
    return function (t) { return x0 + (t - W0) / (W1 - W0) * width; };
  }
  function markerKind(kind) { return kind === "disabled" || kind === "enabled" ? kind : "other"; }

  // -- the detail panel ----------------------------------------------------------------
  var panel = document.getElementById("detail");
  var pinned = false, selected = null;
  function kv(rows) {
    return h("table", null, rows.filter(function (r) { return r; }).map(function (r) {
      return h("tr", null, h("th", { text: r[0] }), h("td", null, r[1]));
    }));
  }
  function showTask(number, barIndex, pin) {
    if (pinned && !pin) return;
    var task = tasksByNumber[number];
    if (!task) return;
    if (barIndex === null || barIndex === undefined) barIndex = barsByTask[number];
    var bar = barIndex === undefined ? null : D.bars[barIndex];
    var body = document.getElementById("detail-body");
    body.textContent = "";
    var status = bar ? bar.outcome : task.status;
    body.appendChild(h("h3", null, "Task " + number + (bar ? " · attempt " + bar.attempt : "") +
      " ", h("span", { "class": "badge outcome-" + status, text: status })));
    var lane = bar ? D.lanes[bar.lane] : null;
    body.appendChild(kv([
      ["task status", task.status + (task.cause ? " (" + task.cause + ")" : "")],
      ["attempts", String(task.attempts)],
      lane && ["source", lane.label],
      bar && ["host", bar.host || "–"],
      bar && ["started", fmtTime(bar.start)],
      bar && ["finished", bar.end === null ? "still running" : fmtTime(bar.end)],
      bar && ["duration", fmtDur((bar.end === null ? W1 : bar.end) - bar.start)],
      bar && ["exit code", bar.exit_code === null ? "–" : String(bar.exit_code)],
      bar && ["cause", bar.cause || "–"],
      ["folder", h("span", { "class": "mono", text: task.task_dir })]
    ]));
    body.appendChild(h("h3", { text: "Parameters" }));
    body.appendChild(kv(Object.keys(task.params).map(function (k) {
      return [k, h("span", { "class": "mono", text: fmtValue(task.params[k]) })];
    })));
    body.appendChild(h("h3", { text: "Error log (end of stderr.log)" }));
    if (task.log !== null) body.appendChild(h("pre", { "class": "log", text: D.logs[task.log] }));
    else body.appendChild(h("p", { "class": "empty", text: task.status === "completed" ?
      "The task completed; its logs are in its folder." : "Empty, or not found here." }));
    panel.hidden = false;
    if (pin) pinned = true;
  }
  function select(node) {
    if (selected) selected.classList.remove("selected");
    selected = node;
    if (node) node.classList.add("selected");
  }
  document.getElementById("detail-close").addEventListener("click", function () {
    panel.hidden = true; pinned = false; select(null);
  });
  function pin(number, barIndex, node) {  // keep a task in the panel
    pinned = false;
    select(node || null);
    showTask(number, barIndex, true);
  }
  function taskLink(number) {
    return h("a", { "class": "task-link", "data-task": number, text: String(number),
      onclick: function () { pin(number, null, null); } });
  }

  // -- timeline ------------------------------------------------------------------------
  function drawTimeline(host) {
    var legend = document.getElementById("timeline-legend");
    var counts = {};
    D.bars.forEach(function (b) { counts[b.outcome] = (counts[b.outcome] || 0) + 1; });
    OUTCOMES.forEach(function (o) {
      legend.appendChild(h("span", { "class": "legend-item", "data-outcome": o },
        h("span", { "class": "swatch swatch-" + o }), o + " " + (counts[o] || 0)));
    });
    if (!D.bars.length) {
      host.appendChild(h("p", { "class": "empty", text: "No task has started yet." }));
      return;
    }
    var labelW = 140, width = Math.max(host.clientWidth || 0, 760), plotW = width - labelW - 12;
    var laneH = D.lanes.length > 80 ? 6 : D.lanes.length > 30 ? 10 : 18, top = 20;
    var height = top + D.lanes.length * laneH + 4;
    var x = timeScale(labelW, plotW);
    var svg = s("svg", { "class": "timeline", width: width, height: height,
      viewBox: "0 0 " + width + " " + height });
    var bySource = {};
    D.lanes.forEach(function (lane, i) {
      var y = top + i * laneH;
      svg.appendChild(s("rect", { "class": "lane-bg" + (i % 2 ? " odd" : ""), x: labelW, y: y,
        width: plotW, height: laneH }));
      if (laneH >= 10) {
        svg.appendChild(s("text", { "class": "lane-label", x: labelW - 6, y: y + laneH - 4,
          "text-anchor": "end", text: lane.label }));
      }
      var r = bySource[lane.source] || (bySource[lane.source] = [i, i]);
      r[1] = i;
    });
    Object.keys(bySource).forEach(function (src) {
      var r = bySource[src], y = top + r[0] * laneH;
      svg.appendChild(s("line", { "class": "source-sep", x1: 0, x2: labelW + plotW, y1: y,
        y2: y }));
      if (laneH < 10) {
        svg.appendChild(s("text", { "class": "lane-label", x: labelW - 6, y: y + 11,
          "text-anchor": "end", text: src }));
      }
    });
    var ticks = timeTicks(W0, W1, Math.max(2, Math.floor(plotW / 110)));
    ticks.ticks.forEach(function (t) {
      svg.appendChild(s("line", { "class": "grid", x1: x(t), x2: x(t), y1: top, y2: height - 4 }));
      svg.appendChild(s("text", { x: x(t), y: 12, "text-anchor": "middle",
        text: fmtClock(t, ticks.withDate) }));
    });
    var g = s("g", { "class": "bars" });
    D.bars.forEach(function (b, i) {
      var x0 = x(b.start), x1 = x(b.end === null ? W1 : b.end);
      g.appendChild(s("rect", { "class": "bar bar-" + b.outcome, "data-i": i, "data-task": b.task,
        x: x0.toFixed(1), y: top + b.lane * laneH + 1, width: Math.max(1.5, x1 - x0).toFixed(1),
        height: Math.max(2, laneH - 2) }));
    });
    svg.appendChild(g);
    D.events.forEach(function (ev) {
      var kind = markerKind(ev.kind), r = bySource[ev.source];
      var y0 = r ? top + r[0] * laneH : top, y1 = r ? top + (r[1] + 1) * laneH : height - 4;
      var xe = x(ev.time);
      svg.appendChild(s("line", { "class": "marker marker-" + kind, "data-source": ev.source,
        x1: xe, x2: xe, y1: y0, y2: y1 },
        s("title", { text: ev.source + " " + ev.kind + " at " + fmtTime(ev.time) + ": " +
          ev.message })));
    });
    g.addEventListener("mouseover", function (e) {
      var i = e.target.getAttribute("data-i");
      if (i !== null) showTask(D.bars[+i].task, +i, false);
    });
    g.addEventListener("click", function (e) {
      var i = e.target.getAttribute("data-i");
      if (i !== null) pin(D.bars[+i].task, +i, e.target);
    });
    host.appendChild(svg);
  }

  // -- health --------------------------------------------------------------------------
  function lineChart(opts) {
    var width = opts.width, height = 150, left = 58, right = 10, top = 20, bottom = 22;
    var plotW = width - left - right, plotH = height - top - bottom;
    var x = timeScale(left, plotW);
    var yMax = opts.yMax > 0 ? opts.yMax : 1;
    var y = function (v) { return top + plotH - Math.min(v, yMax) / yMax * plotH; };
    var svg = s("svg", { "class": "health-chart " + opts.cls, width: width, height: height,
      viewBox: "0 0 " + width + " " + height });
    svg.appendChild(s("text", { x: left, y: 12, "class": "chart-title", text: opts.title }));
    for (var k = 0; k <= 4; k++) {
      var v = yMax * k / 4;
      svg.appendChild(s("line", { "class": "grid", x1: left, x2: left + plotW, y1: y(v),
        y2: y(v) }));
      svg.appendChild(s("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end",
        text: opts.fmt(v) }));
    }
    var ticks = timeTicks(W0, W1, Math.max(2, Math.floor(plotW / 110)));
    ticks.ticks.forEach(function (t) {
      svg.appendChild(s("text", { x: x(t), y: height - 6, "text-anchor": "middle",
        text: fmtClock(t, ticks.withDate) }));
    });
    svg.appendChild(s("line", { "class": "axis", x1: left, x2: left + plotW, y1: top + plotH,
      y2: top + plotH }));
    opts.levels.forEach(function (lv) {
      if (lv.value === null || lv.value === undefined) return;
      svg.appendChild(s("line", { "class": lv.cls, x1: left, x2: left + plotW, y1: y(lv.value),
        y2: y(lv.value) }, s("title", { text: lv.label })));
      svg.appendChild(s("text", { "class": "level-label " + lv.cls, x: left + plotW - 2,
        y: y(lv.value) + (lv.below ? 11 : -3), "text-anchor": "end", text: lv.label }));
    });
    var d = "", pen = false;
    opts.times.forEach(function (t, i) {
      var v = opts.values[i];
      if (v === null || v === undefined) { pen = false; return; }
      d += (pen ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    });
    if (d) svg.appendChild(s("path", { "class": "series", d: d }));
    if (opts.times.length <= 300) {
      opts.times.forEach(function (t, i) {
        var v = opts.values[i];
        if (v === null || v === undefined) return;
        var st = opts.pointStatus ? opts.pointStatus(i) : "";
        svg.appendChild(s("circle", { "class": "point" + (st ? " point-" + st : ""), cx: x(t),
          cy: y(v), r: 2.5 }, s("title", { text: fmtTime(t) + ": " + opts.fmt(v) +
            (st ? " (" + st + ")" : "") })));
      });
    }
    opts.unreachable.forEach(function (t) {
      svg.appendChild(s("rect", { "class": "unreachable", x: x(t) - 1.5, y: top, width: 3,
        height: plotH }, s("title", { text: fmtTime(t) + ": unreachable" })));
    });
    opts.events.forEach(function (ev, k) {
      var kind = markerKind(ev.kind), xe = x(ev.time), late = xe > left + plotW * 0.55;
      var label = ev.kind + ": " + ev.message;
      svg.appendChild(s("line", { "class": "marker marker-" + kind, "data-source": ev.source,
        x1: xe, x2: xe, y1: top, y2: top + plotH },
        s("title", { text: ev.source + " " + ev.kind + " at " + fmtTime(ev.time) + ": " +
          ev.message })));
      svg.appendChild(s("text", { "class": "marker-label marker-" + kind, x: late ? xe - 3 :
        xe + 3, y: top + 10 + (k % 3) * 11, "text-anchor": late ? "end" : "start",
        text: label.length > 40 ? label.slice(0, 39) + "…" : label }));
    });
    return svg;
  }
  function drawHealth(host) {
    var L = D.levels;
    if (!D.health.length) {
      host.appendChild(h("p", { "class": "empty", text: "This sweep has no sources yet." }));
      return;
    }
    var width = Math.max(360, Math.min(560, ((host.clientWidth || 1100) - 40) / 3));
    D.health.forEach(function (hs) {
      var events = D.events.filter(function (e) { return e.source === hs.source; });
      var box = h("div", { "class": "health-source", "data-source": hs.source },
        h("h3", { text: hs.source }));
      if (!hs.time.length) {
        box.appendChild(h("p", { "class": "empty", text: "No health samples were recorded " +
          "for this source while the sweep ran." }));
      }
      if (hs.time.length || events.length) {
        var unreachable = hs.time.filter(function (t, i) { return !hs.reachable[i]; });
        var free = hs.free_bytes, maxFree = Math.max.apply(null, [hs.warning_bytes]
          .concat(free.filter(function (v) { return v !== null; })));
        var load = hs.time.map(function (t, i) {
          return hs.load1[i] === null ? null : hs.load1[i] / (hs.cores[i] || 1);
        });
        var maxLoad = Math.max.apply(null, [L.max_load_per_core]
          .concat(load.filter(function (v) { return v !== null; })));
        var charts = h("div", { "class": "health-charts" });
        charts.appendChild(lineChart({ width: width, cls: "chart-disk", title: "disk free",
          times: hs.time, values: free, yMax: maxFree * 1.15, fmt: fmtBytes,
          pointStatus: function (i) {
            return hs.disk_status[i] === "healthy" ? "" : hs.disk_status[i];
          },
          levels: [{ value: hs.warning_bytes, cls: "level-warning",
            label: "warning " + fmtBytes(hs.warning_bytes) },
          { value: hs.critical_bytes, cls: "level-critical", below: true,
            label: "critical " + fmtBytes(hs.critical_bytes) }],
          unreachable: unreachable, events: events }));
        charts.appendChild(lineChart({ width: width, cls: "chart-load",
          title: "load per core (1 min)", times: hs.time, values: load, yMax: maxLoad * 1.15,
          fmt: function (v) { return v.toFixed(2); },
          levels: [{ value: L.max_load_per_core, cls: "level-max",
            label: "max " + L.max_load_per_core }],
          unreachable: unreachable, events: events }));
        charts.appendChild(lineChart({ width: width, cls: "chart-memory", title: "memory used",
          times: hs.time, values: hs.memory_percent, yMax: 100,
          fmt: function (v) { return v.toFixed(0) + "%"; },
          levels: [{ value: L.max_memory_percent, cls: "level-max",
            label: "max " + L.max_memory_percent + "%" }],
          unreachable: unreachable, events: events }));
        box.appendChild(charts);
        if (hs.samples > hs.time.length) {
          box.appendChild(h("p", { "class": "hint", text: hs.samples + " samples, thinned to " +
            hs.time.length + " (the lowest disk of each interval is kept)." }));
        }
      }
      if (events.length) {
        box.appendChild(h("table", { "class": "events-list" }, events.map(function (e) {
          return h("tr", { "class": "event event-" + markerKind(e.kind) },
            cell(fmtTime(e.time)), cell(e.kind, "kind-" + markerKind(e.kind)), cell(e.message));
        })));
      }
      host.appendChild(box);
    });
    host.appendChild(h("p", { "class": "hint", text: "Disk levels from the project's health " +
      "config: warning below " + fmtBytes(L.disk_warning_free) + " or " +
      L.disk_warning_percent + "% free, critical below " + fmtBytes(L.disk_critical_free) +
      " or " + L.disk_critical_percent + "% free (the lines use the larger of the two for the " +
      "disk's size)." }));
  }

  // -- sources -------------------------------------------------------------------------
  function drawSources(host) {
    var head = ["source", "enabled", "submitted", "completed", "failed", "failure rate",
      "failed by cause", "running", "first dispatch", "last result", "dispatch → last result"];
    var table = h("table", { "class": "data sources-table" },
      h("thead", null, h("tr", null, head.map(function (c, i) {
        return h("th", { "class": i >= 2 && i <= 5 || i === 7 ? "num" : null, text: c });
      }))),
      h("tbody", null, D.sources.map(function (src) {
        var causes = Object.keys(src.failed_by_cause).map(function (k) {
          return k + " " + src.failed_by_cause[k];
        }).join(", ");
        return h("tr", { "class": "source-row", "data-source": src.name },
          cell(src.name), cell(src.enabled ? "yes" : "no: " + (src.disabled_reason || "")),
          cell(String(src.submitted), "num"), cell(String(src.completed), "num"),
          cell(String(src.failed), "num"), cell(fmtPct(src.failure_rate), "num"),
          cell(causes || "–"), cell(String(src.running), "num"),
          cell(fmtTime(src.first_dispatch)), cell(fmtTime(src.last_result)),
          cell(fmtDur(src.span)));
      })));
    host.appendChild(table);
    host.appendChild(h("p", { "class": "hint", text: "“failed” and the failure rate count " +
      "the " +
      "failures held against the source (as in hsm status); “failed by cause” counts every " +
      "failed or lost attempt." }));
  }

  // -- failures ------------------------------------------------------------------------
  function drawFailures(host) {
    if (!D.failures.length) {
      host.appendChild(h("p", { "class": "empty", text: "No task failed." }));
      return;
    }
    var total = D.failures.reduce(function (n, g) { return n + g.count; }, 0);
    host.appendChild(h("p", { "class": "hint", text: total + " failed task(s) in " +
      D.failures.length + " group(s): same cause and the same end of stderr.log (numbers, " +
      "times and task folders ignored). Click a task number for its details." }));
    host.appendChild(h("table", { "class": "data failures-table" },
      h("thead", null, h("tr", null, h("th", { "class": "num", text: "tasks" }),
        h("th", { text: "cause" }), h("th", { text: "error log (first task of the group)" }),
        h("th", { text: "task numbers" }), h("th", { text: "sources" }))),
      h("tbody", null, D.failures.map(function (g) {
        var links = [];
        g.tasks.slice(0, 30).forEach(function (n, i) {
          if (i) links.push(" ");
          links.push(taskLink(n));
        });
        if (g.tasks.length > 30) links.push(" … and " + (g.tasks.length - 30) + " more");
        return h("tr", { "class": "failure-group", "data-count": g.count, "data-cause": g.cause },
          cell(String(g.count), "num"), cell(g.cause),
          h("td", null, g.tail ? h("pre", { text: g.tail }) :
            h("span", { "class": "empty", text: "no error log" })),
          h("td", null, links), cell(g.sources.join(", ")));
      }))));
  }

  guarded("timeline-chart", drawTimeline);
  guarded("health-charts", drawHealth);
  guarded("sources-table", drawSources);
  guarded("failures-list", drawFailures);
  guarded("params-view", function (host) {
    hsmDrawParams(host, { D: D, h: h, s: s, cell: cell, fmtNum: fmtNum, fmtValue: fmtValue,
      tasksByNumber: tasksByNumber, showTask: showTask, pin: pin, taskLink: taskLink });
  });
  document.body.dataset.renderMs = String(Math.round(performance.now()));
  document.body.dataset.rendered = "true";
})();
