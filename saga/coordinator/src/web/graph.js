// A definition's graph drawn as SVG, layered by dependencies (a step stands right of every
// step it waits for), with one saga's position marked: each step coloured by its state, each
// compensation by its own, and the saga's status node highlighted. No library: the graph comes
// from GET /api/definitions/{name}/{version}, the layout is a grid.
"use strict";

import {short, svg} from "./dom.js";

const COL = 190, BOX_W = 156, BOX_H = 46, GAP = 18, PAD = 16, LANE_GAP = 54;

function box(x, y, w, h, cls, attrs, lines) {
  const g = svg("g", Object.assign({class: "node " + cls}, attrs));
  g.append(svg("rect", {x, y, width: w, height: h, rx: 8, ry: 8}));
  lines.forEach((text, i) => {
    g.append(svg("text", {x: x + w / 2, y: y + h / 2 + (i - (lines.length - 1) / 2) * 15 + 4, "text-anchor": "middle", class: i ? "sub" : ""}, text));
  });
  return g;
}

function arrow(x1, y1, x2, y2, cls, label) {
  const g = svg("g", {class: "edge " + cls});
  const mx = (x1 + x2) / 2;
  g.append(svg("path", {d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "marker-end": "url(#arrow)"}));
  if (label) g.append(svg("title", {}, label));
  return g;
}

// The SVG of `graph` with saga `s` marked (`s` may be null: the bare definition).
export function draw(graph, s) {
  const steps = graph.steps;
  const byLayer = new Map();
  for (const st of steps) {
    if (!byLayer.has(st.layer)) byLayer.set(st.layer, []);
    byLayer.get(st.layer).push(st);
  }
  const layers = Math.max(0, ...steps.map((st) => st.layer)) + 1;
  const rows = Math.max(1, ...[...byLayer.values()].map((l) => l.length));
  const bandH = rows * (BOX_H + GAP) - GAP;
  const compensated = steps.filter((st) => st.compensation);
  const laneTop = PAD + bandH + LANE_GAP;
  const laneH = Math.max(2, rows) * (BOX_H + GAP) + 30;
  const width = PAD * 2 + (layers + 2) * COL;
  const height = laneTop + laneH + PAD;
  const state = new Map((s ? s.steps : []).map((st) => [st.name, st]));
  const status = s ? s.status : null;

  const root = svg("svg", {class: "graph", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": "saga " + graph.name + " v" + graph.version});
  root.append(svg("defs", {}, svg("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"},
    svg("path", {d: "M0,0 L10,5 L0,10 z", class: "arrowhead"}))));
  const edges = svg("g", {class: "edges"});
  const nodes = svg("g", {class: "nodes"});
  root.append(edges, nodes);

  // Where each node stands: {x, y} of its box's top left.
  const at = new Map();
  const colX = (c) => PAD + c * COL;
  for (const [layer, list] of byLayer) {
    const offset = (bandH - (list.length * (BOX_H + GAP) - GAP)) / 2;
    list.forEach((st, row) => {
      at.set("step:" + st.name, {x: colX(layer + 1), y: PAD + offset + row * (BOX_H + GAP)});
      at.set("undo:" + st.name, {x: colX(layer + 1), y: laneTop + 24 + offset + row * (BOX_H + GAP)});
    });
  }
  const midY = PAD + bandH / 2;
  const startX = colX(0) + BOX_W - 40;
  at.set("start", {x: startX, y: midY - 16});
  at.set("completed", {x: colX(layers + 1), y: midY - BOX_H / 2});
  at.set("compensated", {x: colX(layers + 1), y: laneTop + 24});
  at.set("needs_operator", {x: colX(layers + 1), y: laneTop + 24 + BOX_H + GAP + 10});

  // The compensating lane: a frame around the compensations.
  const lane = svg("g", {class: "node lane" + (status === "compensating" ? " current" : ""), "data-node": "compensating"});
  lane.append(svg("rect", {x: colX(1) - 10, y: laneTop, width: layers * COL, height: laneH - 10, rx: 10, ry: 10}));
  lane.append(svg("text", {x: colX(1), y: laneTop + 16, class: "lane-title"}, "compensating (dependents first)"));
  nodes.append(lane);

  // Nodes.
  const start = svg("g", {class: "node start" + (status === "pending" ? " current" : ""), "data-node": "start"});
  start.append(svg("circle", {cx: startX + 16, cy: midY, r: 16}));
  start.append(svg("text", {x: startX + 16, y: midY + 34, "text-anchor": "middle", class: "sub"}, short(graph.start_event)));
  nodes.append(start);
  for (const st of steps) {
    const p = at.get("step:" + st.name);
    const mine = state.get(st.name);
    const stepState = mine ? mine.status : "definition";
    const sub = mine ? mine.status : (st.deadline ? "within " + Math.round(st.deadline.within_ms / 1000) + "s" : "");
    nodes.append(box(p.x, p.y, BOX_W, BOX_H, "step step-" + stepState, {"data-node": "step:" + st.name, "data-state": stepState}, [st.name, sub]));
    if (st.compensation) {
      const q = at.get("undo:" + st.name);
      const comp = mine && mine.compensation ? mine.compensation.state : "definition";
      nodes.append(box(q.x, q.y, BOX_W, BOX_H, "undo comp-" + comp, {"data-node": "undo:" + st.name, "data-state": comp},
        ["undo " + st.name, mine ? comp.replace("_", " ") : short(st.compensation.event)]));
    }
  }
  const terminal = (id, label, sub, cls) => {
    const p = at.get(id);
    nodes.append(box(p.x, p.y, BOX_W, BOX_H, cls + (status === id ? " current" : ""), {"data-node": id}, [label, sub]));
  };
  terminal("completed", "completed", graph.on_complete ? "emits " + short(graph.on_complete) : "", "end ok");
  terminal("compensated", "compensated", graph.on_abort ? "emits " + short(graph.on_abort) : "", "end undone");
  if (graph.edges.some((e) => e.kind === "needs_operator")) terminal("needs_operator", "needs operator", "retry, skip or resume", "end stuck");

  // Edges.
  const right = (id) => { const p = at.get(id); return id === "start" ? {x: p.x + 32, y: p.y + 16} : {x: p.x + BOX_W, y: p.y + BOX_H / 2}; };
  const left = (id) => { const p = at.get(id); return {x: p.x, y: p.y + BOX_H / 2}; };
  for (const e of graph.edges) {
    if (!at.has(e.from) && e.from !== "compensating") continue;
    switch (e.kind) {
      case "start": case "success": case "complete": {
        const a = right(e.from), b = left(e.to);
        edges.append(arrow(a.x, a.y, b.x, b.y, e.kind, e.label));
        break;
      }
      case "failure": {
        const p = at.get(e.from);
        const x = p.x + BOX_W / 2, y1 = p.y + BOX_H;
        const g = svg("g", {class: "edge failure"});
        g.append(svg("path", {d: `M${x},${y1} L${x},${laneTop}`, "marker-end": "url(#arrow)"}));
        g.append(svg("title", {}, e.label));
        edges.append(g);
        break;
      }
      case "undo": {
        const a = left(e.from), b = right(e.to);
        edges.append(arrow(a.x, a.y, b.x, b.y, "undo", "undone first: " + e.from.slice(5)));
        break;
      }
      case "compensated": case "needs_operator": {
        const b = left(e.to);
        edges.append(arrow(colX(1) - 10 + layers * COL, b.y, b.x, b.y, e.kind, e.label));
        break;
      }
      default: break;
    }
  }
  const frame = document.createElement("div");
  frame.className = "graph-box";
  frame.append(root);
  return frame;
}
