// clipsei report: renders one page of rows at a time from the JSON block; no network, no libraries.
// Every string from the data is set with textContent, never parsed as HTML.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("clipsei-data").textContent);
  const C = DATA.columns;
  const N = C.rank.length;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const state = { page: 0, rows: [] };

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(value, digits) {
    return value === null || value === undefined ? "\u2013" : value.toFixed(digits);
  }

  // an optional column's value (null where the table had no such column)
  function optional(name, i) {
    return C[name] ? C[name][i] : null;
  }

  function className(k) {
    return k >= 0 && k < DATA.classes.length ? DATA.classes[k] : String(k);
  }

  function thumb(i, cls) {
    const uri = DATA.thumbs[String(i)];
    if (!uri) return el("div", "nothumb", "no preview");
    const img = el("img", cls || "thumb");
    img.loading = "lazy";
    img.alt = C.path ? C.path[i] : "#" + i;
    img.src = uri;
    return img;
  }

  // Trajectory string: one letter per epoch bin, a-z = entropy level 0..25 within DATA.trajectoryRange,
  // upper case where the prediction disagreed with the given label.
  function sparkline(code) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 130 34");
    const title = document.createElementNS(SVG_NS, "title");
    const range = DATA.trajectoryRange || [0, 0];
    title.textContent = "entropy per epoch, bottom " + fmt(range[0], 2) + " to top " + fmt(range[1], 2) +
      " nats; red dots: the prediction disagreed with the given label";
    svg.appendChild(title);
    if (!code) return svg;
    const n = code.length;
    const pts = [];
    for (let e = 0; e < n; e++) {
      const ch = code[e];
      const level = ch.toLowerCase().charCodeAt(0) - 97;
      const x = n === 1 ? 65 : 3 + (124 * e) / (n - 1);
      const y = 31 - (28 * level) / 25;
      pts.push([x, y, ch !== ch.toLowerCase()]);
    }
    const line = document.createElementNS(SVG_NS, "polyline");
    line.setAttribute("points", pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#34495e");
    line.setAttribute("stroke-width", "1.3");
    svg.appendChild(line);
    for (const p of pts) {
      if (!p[2]) continue;
      const dot = document.createElementNS(SVG_NS, "circle");
      dot.setAttribute("cx", p[0].toFixed(1));
      dot.setAttribute("cy", p[1].toFixed(1));
      dot.setAttribute("r", "1.8");
      dot.setAttribute("fill", "#c0392b");
      svg.appendChild(dot);
    }
    return svg;
  }

  function labelCell(i) {
    const td = el("td");
    const given = C.given[i], suggested = C.suggested[i];
    if (given === suggested) {
      td.appendChild(el("span", "same", className(given)));
    } else {
      td.appendChild(el("span", "given", className(given)));
      td.appendChild(document.createTextNode(" \u2192 "));
      td.appendChild(el("span", "suggested", className(suggested)));
    }
    td.appendChild(el("span", "conf", "confidence " + fmt(C.conf[i], 2)));
    return td;
  }

  // duplicate sets are shown side by side: the other members instead of the neighbours
  function duplicateIds(i) {
    if (!state.groupView || !C.dgroup || C.dgroup[i] < 0) return null;
    const ids = [];
    for (let j = 0; j < N; j++) if (j !== i && C.dgroup[j] === C.dgroup[i]) ids.push(j);
    return ids;
  }

  function neighbourCell(i) {
    const td = el("td");
    const box = el("div", "neighbours");
    const members = duplicateIds(i);
    if (members) box.appendChild(el("span", "lab", "same set:"));
    const ids = members || (C.nbr ? C.nbr[i] : []);
    ids.forEach((j, m) => {
      if (j < 0) return;
      const cell = el("div", "neighbour");
      cell.title = (C.path ? C.path[j] : "#" + j) + (members ? "" : "\ncosine " + fmt(C.nsim ? C.nsim[i][m] : null, 3));
      cell.appendChild(thumb(j));
      const agrees = C.given[j] === C.suggested[i];
      cell.appendChild(el("span", "lab " + (agrees ? "agree" : "differ"), className(C.given[j])));
      box.appendChild(cell);
    });
    td.appendChild(box);
    return td;
  }

  function renderRow(i) {
    const tr = el("tr", C.flag[i] ? "flagged" : "");
    tr.dataset.row = String(i);
    tr.appendChild(el("td", "num", String(C.rank[i])));
    const tdThumb = el("td");
    tdThumb.appendChild(thumb(i));
    tr.appendChild(tdThumb);
    tr.appendChild(el("td", "path", C.path ? C.path[i] : "#" + i));
    tr.appendChild(labelCell(i));
    tr.appendChild(el("td", "num", fmt(C.score[i], 3)));
    tr.appendChild(el("td", "num", fmt(optional("perr", i), 2)));
    tr.appendChild(el("td", "num", fmt(optional("sei", i), 3)));
    tr.appendChild(el("td", "num", fmt(optional("knn", i), 2)));
    const tdSpark = el("td");
    tdSpark.appendChild(sparkline(C.traj ? C.traj[i] : ""));
    tr.appendChild(tdSpark);
    tr.appendChild(neighbourCell(i));
    return tr;
  }

  function matches(i, f) {
    if (f.issue && !f.issue.has(i)) return false;
    if (!f.issue && f.flaggedOnly && !C.flag[i]) return false;
    if (f.cls >= 0 && C.given[i] !== f.cls && C.suggested[i] !== f.cls) return false;
    if (C.score[i] > f.maxScore) return false;
    if (f.text && !(C.path ? C.path[i] : "").toLowerCase().includes(f.text)) return false;
    return true;
  }

  const SORT_KEYS = {
    rank: (i) => C.rank[i], score: (i) => C.score[i], conf: (i) => C.conf[i],
    perr: (i) => optional("perr", i), knn: (i) => optional("knn", i),
    path: (i) => (C.path ? C.path[i] : ""),
  };

  function applyFilters() {
    const issue = document.getElementById("f-issue").value;
    const issueRows = issue && C.issues && C.issues[issue] ? new Set(C.issues[issue]) : null;
    state.groupView = Boolean(issueRows) && /duplicate|leakage/.test(issue);
    const f = {
      issue: issueRows,
      flaggedOnly: document.getElementById("f-view").value === "flagged",
      cls: Number(document.getElementById("f-class").value),
      maxScore: Number(document.getElementById("f-score").value || 1),
      text: document.getElementById("f-path").value.trim().toLowerCase(),
    };
    const key = SORT_KEYS[document.getElementById("f-sort").value];
    const sign = document.getElementById("f-desc").checked ? -1 : 1;
    const rows = [];
    for (let i = 0; i < N; i++) if (matches(i, f)) rows.push(i);
    rows.sort((a, b) => {
      if (state.groupView && C.dgroup[a] !== C.dgroup[b]) return C.dgroup[a] - C.dgroup[b];
      const ka = key(a), kb = key(b);
      return sign * (ka < kb ? -1 : ka > kb ? 1 : C.rank[a] - C.rank[b]);
    });
    state.rows = rows;
    state.page = 0;
    render();
  }

  function render() {
    const size = DATA.pageSize;
    const pages = Math.max(1, Math.ceil(state.rows.length / size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const start = state.page * size;
    const slice = state.rows.slice(start, start + size);
    const body = document.querySelector("#rows tbody");
    body.replaceChildren(...slice.map(renderRow));
    document.getElementById("empty").hidden = slice.length > 0;
    const info = state.rows.length
      ? "rows " + (start + 1) + "\u2013" + (start + slice.length) + " of " + state.rows.length + " (page " + (state.page + 1) + " of " + pages + ")"
      : "0 rows";
    for (const id of ["page-info", "page-info2"]) document.getElementById(id).textContent = info;
    for (const id of ["prev", "prev2"]) document.getElementById(id).disabled = state.page === 0;
    for (const id of ["next", "next2"]) document.getElementById(id).disabled = state.page >= pages - 1;
  }

  function init() {
    const select = document.getElementById("f-class");
    DATA.classes.forEach((name, k) => {
      const option = el("option", "", name);
      option.value = String(k);
      select.appendChild(option);
    });
    const issueSelect = document.getElementById("f-issue");
    Object.keys(C.issues || {}).forEach((name) => {
      const option = el("option", "", name.replace(/_/g, " ") + " (" + C.issues[name].length + ")");
      option.value = name;
      issueSelect.appendChild(option);
    });
    if (!C.flag.some((v) => v)) document.getElementById("f-view").value = "all";
    for (const id of ["f-issue", "f-view", "f-class", "f-score", "f-path", "f-sort", "f-desc"]) {
      document.getElementById(id).addEventListener("input", applyFilters);
    }
    const turn = (step) => () => { state.page += step; render(); window.scrollTo(0, document.querySelector(".review").offsetTop); };
    for (const id of ["prev", "prev2"]) document.getElementById(id).addEventListener("click", turn(-1));
    for (const id of ["next", "next2"]) document.getElementById(id).addEventListener("click", turn(1));
    applyFilters();
  }

  init();
})();
