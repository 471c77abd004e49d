// tessera's photo viewer and mask painter: the js_on_load of a gr.HTML (see tessera/web/viewer.py).
// Gradio runs this body with `element` (the component's root), `props` (props.value: the viewer's JSON value)
// and `watch` (called when the server sets a new value).
//
// The photo is drawn from a tile pyramid: the coarsest level (one tile) under everything, then the tiles in view
// of the level whose pixels are closest to the screen's. Strokes are kept in photo pixels and drawn as vector
// paths, so that painting at 100 % and beyond is exact; they reach the server only inside props.value, which the
// page sends with a job. Nothing here polls or uploads.
const TILE_CACHE = 384;          // decoded tiles kept (least recently drawn dropped first)
const MAX_ZOOM = 32;             // screen pixels per photo pixel
const BRUSH_MIN = 1, BRUSH_MAX = 500;
const PAINT = "rgb(255, 60, 140)", PAINT_ALPHA = 0.55;

const lang = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
const texts = (props.texts && (props.texts[lang] || props.texts.en)) || {};
const say = (key) => texts[key] || key;
const root = element.querySelector(".tv") || element;
root.innerHTML = "";

// ------------------------------------------------------------------------------------------- the page parts
function button(key, title, onClick) {
  const b = document.createElement("button");
  b.type = "button"; b.className = "tv-btn"; b.textContent = say(key); b.title = say(title || key);
  b.dataset.action = key;
  b.addEventListener("click", (e) => { e.preventDefault(); onClick(); });
  bar.appendChild(b);
  return b;
}
const bar = document.createElement("div"); bar.className = "tv-bar"; root.appendChild(bar);
const wrap = document.createElement("div"); wrap.className = "tv-wrap"; root.appendChild(wrap);
wrap.style.height = (props.height || 560) + "px";
const canvas = document.createElement("canvas"); canvas.className = "tv-canvas"; wrap.appendChild(canvas);
const info = document.createElement("div"); info.className = "tv-info"; root.appendChild(info);
const ctx = canvas.getContext("2d");
const layer = document.createElement("canvas");  // the strokes, composited see-through over the photo
const lctx = layer.getContext("2d");

const state = {
  value: {}, doc: null, before: null, overlay: null, overlayImage: null, editable: true,
  strokes: [], redo: [], current: null,
  s: 1, ox: 0, oy: 0, fitted: false, tool: "brush", size: Number(props.brush || 40),
  compare: false, split: 0.5, pointer: null, drag: null, space: false, hover: false,
};
const tiles = new Map();  // url -> {img, ready, used}
let frame = 0, drawCount = 0;

const tools = {};
tools.brush = button("brush", "brush.tip", () => setTool("brush"));
tools.eraser = button("eraser", "eraser.tip", () => setTool("eraser"));
tools.pan = button("pan", "pan.tip", () => setTool("pan"));
const sizeLabel = document.createElement("label"); sizeLabel.className = "tv-size";
sizeLabel.textContent = say("size") + " ";
const sizeInput = document.createElement("input");
sizeInput.type = "number"; sizeInput.min = BRUSH_MIN; sizeInput.max = BRUSH_MAX; sizeInput.step = 1;
sizeInput.value = state.size; sizeInput.className = "tv-size-input";
sizeInput.addEventListener("change", () => setSize(Number(sizeInput.value)));
sizeLabel.appendChild(sizeInput); bar.appendChild(sizeLabel);
button("undo", "undo.tip", undo);
button("redo", "redo.tip", redo);
button("clear", "clear.tip", clearStrokes);
button("fit", "fit.tip", () => { fit(); });
button("100%", "actual.tip", () => zoomAt(1, canvasWidth() / 2, canvasHeight() / 2));
button("−", "out.tip", () => zoomAt(state.s / 1.5, canvasWidth() / 2, canvasHeight() / 2));
button("+", "in.tip", () => zoomAt(state.s * 1.5, canvasWidth() / 2, canvasHeight() / 2));
const compareButton = button("compare", "compare.tip", () => setCompare(!state.compare));
const zoomText = document.createElement("span"); zoomText.className = "tv-zoom"; bar.appendChild(zoomText);

function canvasWidth() { return wrap.clientWidth || 1; }
function canvasHeight() { return wrap.clientHeight || 1; }

function activeTool() { return state.editable ? state.tool : "pan"; }
function setTool(tool) {
  state.tool = tool;
  if (tool !== "pan" && state.compare) setCompare(false);
  for (const [name, b] of Object.entries(tools)) b.classList.toggle("tv-on", name === activeTool());
  requestDraw();
}
function setSize(size) {
  if (!Number.isFinite(size)) size = state.size;
  state.size = Math.max(BRUSH_MIN, Math.min(BRUSH_MAX, Math.round(size)));
  sizeInput.value = state.size;
  requestDraw();
}
function setCompare(on) {
  state.compare = on && !!state.before;
  compareButton.classList.toggle("tv-on", state.compare);
  requestDraw();
}

// ------------------------------------------------------------------------------------------- value in and out
function readValue(text) {
  let value = {};
  try { value = typeof text === "string" && text ? JSON.parse(text) : (text || {}); } catch (e) { value = {}; }
  const photo = value.photo || null;
  const same = photo && state.doc && photo.id === state.doc.id;
  const reset = !same || (value.version || 0) !== (state.value.version || 0);
  state.value = value;
  state.before = value.before || null;
  state.editable = value.editable !== false && !!photo;
  if (reset) {
    state.doc = photo;
    state.strokes = Array.isArray(value.strokes) ? value.strokes : [];
    state.redo = [];
    if (!same) { state.fitted = false; tiles.clear(); }
  }
  setOverlay(value.overlay || null);
  // painting tools only where the photo may be painted (a compare-only viewer shows none)
  for (const b of bar.querySelectorAll("[data-action=brush],[data-action=eraser],[data-action=pan]," +
                                       "[data-action=undo],[data-action=redo],[data-action=clear]")) {
    b.style.display = state.editable || props.paints ? "" : "none";
    b.disabled = !state.editable;
  }
  sizeLabel.style.display = state.editable || props.paints ? "" : "none";
  sizeInput.disabled = !state.editable;
  setTool(state.tool);
  if (reset) setCompare(!!state.before);  // a new result: compare it with the version before
  else setCompare(state.compare);         // still possible only with a "before"
  if (!reset && state.strokes.length) publish();  // the server's value (a mask overlay) keeps the strokes
  if (!state.fitted) fit();
  requestDraw();
}
function setOverlay(overlay) {
  if ((overlay && overlay.url) === (state.overlay && state.overlay.url)) return;
  state.overlay = overlay; state.overlayImage = null;
  if (overlay && overlay.url) {
    const img = new Image();
    img.onload = () => { state.overlayImage = img; requestDraw(); };
    img.src = overlay.url;
  }
}
function publish() {
  // The strokes travel in the value; setting it sends nothing to the server.
  props.value = JSON.stringify({ ...state.value, strokes: state.strokes });
  updateInfo();
}

// ------------------------------------------------------------------------------------------- strokes
function undo() {
  if (!state.strokes.length) return;
  state.redo.push(state.strokes.pop()); publish(); requestDraw();
}
function redo() {
  if (!state.redo.length) return;
  state.strokes.push(state.redo.pop()); publish(); requestDraw();
}
function clearStrokes() {
  if (!state.strokes.length) return;
  state.redo = state.strokes.reverse(); state.strokes = []; publish(); requestDraw();
}

// ------------------------------------------------------------------------------------------- view
function toPhoto(x, y) { return [(x - state.ox) / state.s, (y - state.oy) / state.s]; }
function fit() {
  if (!state.doc || canvasWidth() < 2) return;
  const s = Math.min(canvasWidth() / state.doc.width, canvasHeight() / state.doc.height);
  state.s = s;
  state.ox = (canvasWidth() - state.doc.width * s) / 2;
  state.oy = (canvasHeight() - state.doc.height * s) / 2;
  state.fitted = true;
  requestDraw();
}
function zoomAt(scale, x, y) {
  if (!state.doc) return;
  const fitScale = Math.min(canvasWidth() / state.doc.width, canvasHeight() / state.doc.height);
  scale = Math.max(Math.min(fitScale, 1) / 4, Math.min(MAX_ZOOM, scale));
  const [px, py] = toPhoto(x, y);
  state.s = scale;
  state.ox = x - px * scale;
  state.oy = y - py * scale;
  requestDraw();
}

function tile(url) {
  let entry = tiles.get(url);
  if (!entry) {
    const img = new Image();
    entry = { img, ready: false, used: frame };
    img.onload = () => { entry.ready = true; requestDraw(); };
    img.src = url;
    tiles.set(url, entry);
  }
  entry.used = frame;
  return entry;
}
function dropOldTiles() {
  if (tiles.size <= TILE_CACHE) return;
  const old = [...tiles.entries()].sort((a, b) => a[1].used - b[1].used);
  for (const [url, entry] of old.slice(0, tiles.size - TILE_CACHE)) {
    if (entry.used === frame) break;
    entry.img.src = ""; tiles.delete(url);
  }
}

// Draw one pyramid into photo space, scaled by `factor` (before/after of another size) within the clip rect.
function drawPyramid(doc, factor) {
  const dpr = window.devicePixelRatio || 1;
  const levels = doc.levels;
  const top = levels.length - 1;
  const ratio = (level) => doc.width * factor / levels[level].width;  // photo-space px per level px
  let chosen = 0;
  for (let level = top; level >= 0; level--) {
    if (state.s * ratio(level) * dpr <= 1.0001) { chosen = level; break; }
  }
  const sharp = state.s * ratio(0) >= 2;
  ctx.imageSmoothingEnabled = !sharp;
  for (const level of chosen === top ? [top] : [top, chosen]) {
    const r = ratio(level), k = state.s * r;
    const x0 = Math.max(0, Math.floor(-state.ox / k / doc.tile)), y0 = Math.max(0, Math.floor(-state.oy / k / doc.tile));
    const x1 = Math.min(levels[level].cols - 1, Math.floor((canvasWidth() - state.ox) / k / doc.tile));
    const y1 = Math.min(levels[level].rows - 1, Math.floor((canvasHeight() - state.oy) / k / doc.tile));
    for (let row = y0; row <= y1; row++) {
      for (let col = x0; col <= x1; col++) {
        const entry = tile(`${doc.url}L${level}/${row}-${col}.jpg`);
        if (!entry.ready) continue;
        const w = entry.img.naturalWidth, h = entry.img.naturalHeight;
        ctx.drawImage(entry.img, state.ox + col * doc.tile * k, state.oy + row * doc.tile * k, w * k, h * k);
      }
    }
  }
}

function drawStrokes(width, height) {
  const dpr = window.devicePixelRatio || 1;
  if (layer.width !== canvas.width || layer.height !== canvas.height) {
    layer.width = canvas.width; layer.height = canvas.height;
  }
  lctx.setTransform(1, 0, 0, 1, 0, 0);
  lctx.clearRect(0, 0, layer.width, layer.height);
  const any = state.strokes.length || state.current || state.overlayImage;
  if (!any) return;
  lctx.setTransform(dpr * state.s, 0, 0, dpr * state.s, dpr * state.ox, dpr * state.oy);
  if (state.overlayImage) {
    lctx.imageSmoothingEnabled = false;
    lctx.drawImage(state.overlayImage, 0, 0, state.overlay.width, state.overlay.height);
  }
  for (const stroke of state.current ? [...state.strokes, state.current] : state.strokes) {
    lctx.globalCompositeOperation = stroke.erase ? "destination-out" : "source-over";
    lctx.strokeStyle = lctx.fillStyle = PAINT;
    lctx.lineWidth = stroke.size; lctx.lineCap = "round"; lctx.lineJoin = "round";
    const p = stroke.points;
    lctx.beginPath();
    if (p.length === 1) {
      lctx.arc(p[0][0], p[0][1], stroke.size / 2, 0, 2 * Math.PI); lctx.fill();
    } else {
      lctx.moveTo(p[0][0], p[0][1]);
      for (let i = 1; i < p.length; i++) lctx.lineTo(p[i][0], p[i][1]);
      lctx.stroke();
    }
  }
  lctx.globalCompositeOperation = "source-over";
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.globalAlpha = PAINT_ALPHA;
  ctx.drawImage(layer, 0, 0);
  ctx.restore();
}

function draw() {
  frame++;
  const dpr = window.devicePixelRatio || 1;
  const width = canvasWidth(), height = canvasHeight();
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    canvas.style.width = width + "px"; canvas.style.height = height + "px";
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#2b2b2b"; ctx.fillRect(0, 0, width, height);
  if (!state.doc) {
    ctx.fillStyle = "#bbb"; ctx.font = "15px sans-serif"; ctx.textAlign = "center";
    ctx.fillText(say("empty"), width / 2, height / 2);
    updateInfo();
    return;
  }
  const splitX = state.split * width;
  if (state.compare && state.before) {
    ctx.save(); ctx.beginPath(); ctx.rect(0, 0, splitX, height); ctx.clip();
    drawPyramid(state.before, state.doc.width / state.before.width);
    ctx.restore();
    ctx.save(); ctx.beginPath(); ctx.rect(splitX, 0, width - splitX, height); ctx.clip();
    drawPyramid(state.doc, 1);
    ctx.restore();
  } else {
    drawPyramid(state.doc, 1);
  }
  if (!state.compare) drawStrokes(width, height);
  if (state.compare && state.before) {
    ctx.fillStyle = "#fff"; ctx.fillRect(splitX - 1, 0, 2, height);
    ctx.font = "13px sans-serif"; ctx.textAlign = "left";
    ctx.fillText(say("before"), 8, 18); ctx.textAlign = "right"; ctx.fillText(say("after"), width - 8, 18);
  }
  if (state.pointer && state.hover && !state.compare && activeTool() !== "pan") {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.arc(state.pointer[0], state.pointer[1], Math.max(1, state.size * state.s / 2), 0, 2 * Math.PI);
    ctx.stroke();
  }
  dropOldTiles();
  drawCount++;
  updateInfo();
}
let pending = false;
function requestDraw() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; draw(); });
}
function updateInfo() {
  zoomText.textContent = state.doc ? `${Math.round(state.s * 100)}%` : "";
  const doc = state.doc;
  info.textContent = doc ? `${doc.width}×${doc.height} · ${say("brush")} ${state.size} px · ${state.strokes.length} ` +
    say("strokes") + (state.value.note ? ` · ${state.value.note}` : "") : "";
  element.dataset.zoom = String(state.s);
  element.dataset.strokes = String(state.strokes.length);
  element.dataset.photo = doc ? doc.id : "";
}

// ------------------------------------------------------------------------------------------- input
function local(event) {
  const rect = canvas.getBoundingClientRect();
  return [event.clientX - rect.left, event.clientY - rect.top];
}
canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("pointerdown", (event) => {
  if (!state.doc) return;
  root.focus({ preventScroll: true });
  const [x, y] = local(event);
  canvas.setPointerCapture(event.pointerId);
  const panning = event.button === 1 || event.button === 2 || state.space || activeTool() === "pan";
  if (state.compare && event.button === 0 && !state.space) {
    state.drag = { kind: "split" }; state.split = Math.min(1, Math.max(0, x / canvasWidth())); requestDraw();
  } else if (panning) {
    state.drag = { kind: "pan", x, y, ox: state.ox, oy: state.oy };
  } else if (event.button === 0 && state.editable) {
    const [px, py] = toPhoto(x, y);
    state.current = { erase: activeTool() === "eraser", size: state.size, points: [[px, py]] };
    state.drag = { kind: "paint" };
  }
  event.preventDefault();
});
canvas.addEventListener("pointermove", (event) => {
  const [x, y] = local(event);
  state.pointer = [x, y]; state.hover = true;
  const drag = state.drag;
  if (drag && drag.kind === "pan") {
    state.ox = drag.ox + x - drag.x; state.oy = drag.oy + y - drag.y;
  } else if (drag && drag.kind === "split") {
    state.split = Math.min(1, Math.max(0, x / canvasWidth()));
  } else if (drag && drag.kind === "paint" && state.current) {
    const [px, py] = toPhoto(x, y);
    const last = state.current.points[state.current.points.length - 1];
    // a point per half screen pixel, or per eighth of the brush: a wide brush needs no dense path
    const step = Math.max(0.5 / state.s, state.current.size / 8);
    if (Math.hypot(px - last[0], py - last[1]) >= step) state.current.points.push([px, py]);
  }
  requestDraw();
});
function endDrag(event) {
  if (state.drag && state.drag.kind === "paint" && state.current && event && event.clientX !== undefined) {
    const [x, y] = local(event);
    const [px, py] = toPhoto(x, y);
    const last = state.current.points[state.current.points.length - 1];
    if (px !== last[0] || py !== last[1]) state.current.points.push([px, py]);
  }
  if (state.drag && state.drag.kind === "paint" && state.current) {
    state.strokes.push(state.current); state.redo = []; state.current = null; publish();
  }
  state.drag = null; requestDraw();
}
canvas.addEventListener("pointerup", endDrag);
canvas.addEventListener("pointercancel", endDrag);
canvas.addEventListener("pointerleave", () => { state.hover = false; requestDraw(); });
canvas.addEventListener("wheel", (event) => {
  if (!state.doc) return;
  event.preventDefault();
  const [x, y] = local(event);
  zoomAt(state.s * Math.exp(-event.deltaY * 0.0015), x, y);
}, { passive: false });
root.tabIndex = 0;
function mine(event) {
  const target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) {
    return target === sizeInput && (event.key === "[" || event.key === "]");
  }
  return state.hover || root.contains(document.activeElement);
}
document.addEventListener("keydown", (event) => {
  if (!mine(event) || !state.doc) return;
  const key = event.key, ctrl = event.ctrlKey || event.metaKey;
  let handled = true;
  if (key === "[") setSize(state.size <= 10 ? state.size - 1 : state.size / 1.15);
  else if (key === "]") setSize(state.size < 10 ? state.size + 1 : state.size * 1.15);
  else if (ctrl && (key === "z" || key === "Z") && !event.shiftKey) undo();
  else if (ctrl && (key === "y" || ((key === "z" || key === "Z") && event.shiftKey))) redo();
  else if (key === " ") state.space = true;
  else if (!ctrl && key === "b" && state.editable) setTool("brush");
  else if (!ctrl && key === "e" && state.editable) setTool("eraser");
  else if (!ctrl && key === "h") setTool("pan");
  else if (!ctrl && key === "0") fit();
  else if (!ctrl && key === "1") zoomAt(1, canvasWidth() / 2, canvasHeight() / 2);
  else handled = false;
  if (handled) event.preventDefault();
});
document.addEventListener("keyup", (event) => { if (event.key === " ") state.space = false; });
new ResizeObserver(() => { if (!state.fitted) fit(); requestDraw(); }).observe(wrap);

// For tests and for whoever embeds the page: the view as numbers, photo -> page coordinates.
const api = {
  toClient(x, y) {
    const rect = canvas.getBoundingClientRect();
    return { x: rect.left + state.ox + x * state.s, y: rect.top + state.oy + y * state.s };
  },
  view() { return { s: state.s, ox: state.ox, oy: state.oy, size: state.size, strokes: state.strokes.length,
                    photo: state.doc && state.doc.id, compare: state.compare, draws: drawCount,
                    editable: state.editable, tool: activeTool(),
                    tilesLoaded: [...tiles.values()].filter((t) => t.ready).length }; },
  centerOn(x, y, scale) { zoomAt(scale, canvasWidth() / 2, canvasHeight() / 2);
    state.ox = canvasWidth() / 2 - x * state.s; state.oy = canvasHeight() / 2 - y * state.s; requestDraw(); },
  setSize, setTool, undo, redo,
};
window.tesseraViewers = window.tesseraViewers || {};
window.tesseraViewers[props.viewer_id || element.id || "viewer"] = api;

setTool(state.tool);
readValue(props.value);
watch("value", () => readValue(props.value));
