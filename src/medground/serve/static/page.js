// medground's page: open an image or a volume, look at it (window/level, zoom, pan, three planes), draw a
// box, ask, see boxes and masks; segment in context. Plain browser JavaScript on a 2D canvas, no build step,
// nothing fetched from elsewhere. Coordinates: every box is [x0, y0, x1, y1] in pixels of the image (or
// volume slice) shown, x1/y1 exclusive, as the API uses; the screen is only ever a view of those pixels.
// Volumes are parsed on the server (one reader for NIfTI and DICOM, canonical RAS+); the page fetches a
// slice's float32 values and windows them itself, so a window/level drag never waits on the network.
"use strict";

const $ = (id) => document.getElementById(id);
// pixel values as stored: no colour management (a gAMA or ICC chunk must not change what is shown)
const decode = (blob) => createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
const COLOURS = ["#ff5a5a", "#4cd964", "#59b0ff", "#ffcc00", "#d17bff", "#00d0c0"];
const LABEL_PX = 13; // box labels' font size in screen pixels, whatever the zoom or the image's size
const PLANES = ["axial", "coronal", "sagittal"];
const DEMO_MODELS = { "bird-nano": "a 1.4 M-parameter demo model trained on a CPU, not a clinical or research model" };
const view = $("view");
const ctx = view.getContext("2d");
const picture = $("picture"); // the image or slice at its own pixels, windowed: what the boxes refer to
const state = {
  image: null, // data URL of an opened 2D image (null for a volume)
  volume: null, // VolumeInfo of an uploaded volume
  windows: {}, // window name -> [lo, hi] in the volume's values
  wl: null, // [lo, hi] in use
  preset: null, // the last window chosen by name: the one the server windows slices sent to the model with
  point: null, // crosshair: [i, j, k] voxel of the canonical RAS+ volume
  slices: {}, // plane -> {index, values: Float32Array, width, height}
  mm: [1, 1], // [col, row] mm of a picture pixel (1, 1 for images)
  zoom: 1, pan: [0, 0], // zoom relative to "fit"; pan in CSS pixels
  box: null, // the user's box, picture pixels
  answer: [], // [{label, box, mask?}] of the last answer
  masks: [], // [{name, colour, canvas, png, on, opacity}] shown over the picture
  history: [], // chat messages so far (chat route)
  slice: null, // SliceInfo the answer refers to
  opened: 0, // bumps when a file opens: replies for an older file are dropped
  firstSliceMarked: false,
  wlTimes: [], // ms from each window/level pointer event to the view's pixels changed (bench_page reads them)
  wlFrames: [], // ms from each window/level pointer event to the next animation frame after it
};

// --- status next to the control that caused it: busy (spinner), done, or an error
function status(id, text, how = "") {
  $(id).textContent = text;
  $(id).className = "status " + how;
}

// --- access token: asked when the server answers 401, kept for this tab in sessionStorage
function authHeaders() {
  const token = sessionStorage.getItem("medground-token");
  return token ? { Authorization: "Bearer " + token } : {};
}
let tokenWaiters = [];
function askToken(refused) {
  $("token-error").textContent = refused ? "The server refused that token (401): check it and enter it again." : "";
  $("token-form").hidden = false;
  $("token").focus();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("medground-token", $("token").value);
  $("token-form").hidden = true;
  $("token-error").textContent = "";
  tokenWaiters.forEach((resolve) => resolve());
  tokenWaiters = [];
  showModel();
});
async function api(path, options = {}) {
  for (;;) {
    const headers = { ...(options.headers || {}), ...authHeaders() };
    const reply = await fetch(path, { ...options, headers });
    if (reply.status === 401) {
      const refused = sessionStorage.getItem("medground-token") !== null;
      sessionStorage.removeItem("medground-token");
      await askToken(refused);
      continue;
    }
    if (!reply.ok) {
      let message = reply.statusText;
      try { message = (await reply.json()).error.message; } catch (_) { /* not JSON */ }
      throw new Error(`${reply.status}: ${message}`);
    }
    return reply;
  }
}
const postJSON = (path, body) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

// --- the model that answers, named with a link to its card (without asking for a token at load)
async function showModel() {
  const reply = await fetch("/v1/models", { headers: authHeaders() });
  if (!reply.ok) return;
  const id = (await reply.json()).data[0].id;
  const note = $("model-note");
  note.replaceChildren(`Answers come from ${id}` + (DEMO_MODELS[id] ? `, ${DEMO_MODELS[id]}` : "") + ".");
  if ((await fetch(`/static/cards/${encodeURIComponent(id)}.md`)).ok) {
    const link = Object.assign(document.createElement("a"), { href: `/static/cards/${encodeURIComponent(id)}.md`, target: "_blank", textContent: "Model card" });
    link.id = "model-card";
    note.append(" ", link);
  }
  note.dataset.model = id;
}
showModel();

// --- opening files: content decides. Images a browser decodes are shown as they are; TIFF through the
// server's decoder; DICOM, NIfTI and zips are uploaded as a volume.
const IMAGE_TYPES = [
  ["png", [0x89, 0x50, 0x4e, 0x47]], ["jpeg", [0xff, 0xd8]], ["bmp", [0x42, 0x4d]], ["gif", [0x47, 0x49, 0x46]],
  ["tiff", [0x49, 0x49, 0x2a, 0x00]], ["tiff", [0x4d, 0x4d, 0x00, 0x2a]],
];
async function imageType(file) {
  const head = new Uint8Array(await file.slice(0, 16).arrayBuffer());
  const riff = String.fromCharCode(...head.slice(0, 4)) === "RIFF" && String.fromCharCode(...head.slice(8, 12)) === "WEBP";
  if (riff) return "webp";
  const found = IMAGE_TYPES.find(([, magic]) => magic.every((b, i) => head[i] === b));
  return found ? found[0] : null;
}
async function openFiles(files) {
  if (!files.length) return;
  performance.clearMarks();
  performance.mark("medground-file-change");
  state.firstSliceMarked = false;
  delete view.dataset.firstSlice;
  const opened = ++state.opened;
  resetForNewPicture();
  try {
    const type = files.length === 1 ? await imageType(files[0]) : null;
    if (type) await openImage(files[0], type, opened);
    else await openVolume(files.length === 1 ? files[0] : await zipFiles(files), files.length === 1 ? files[0].name : "series.zip", opened);
  } catch (error) {
    if (opened === state.opened) status("open-status", "Could not open: " + error.message, "error");
  }
}
function readDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}
async function openImage(file, type, opened) {
  status("open-status", `Reading ${file.name}...`, "busy");
  const url = "data:image/" + type + ";base64," + (await readDataURL(file)).split(",", 2)[1];
  const shown = type === "tiff" ? await (await postJSON("/v1/images/preview.png", { image: url })).blob() : file;
  const bitmap = await decode(shown);
  if (opened !== state.opened) return;
  state.image = url;
  state.mm = [1, 1];
  $("volume-controls").hidden = true;
  $("planes").hidden = true;
  setPicture(bitmap, null);
  status("open-status", `${file.name}: ${bitmap.width} x ${bitmap.height} pixels`, "done");
}
async function openVolume(blob, name, opened) {
  status("open-status", `Uploading ${name} (${(blob.size / 1048576).toFixed(1)} MB) and reading it on the server...`, "busy");
  const modality = $("modality").value ? `&modality=${$("modality").value}` : "";
  const reply = await api(`/v1/volumes?name=${encodeURIComponent(name)}${modality}`, {
    method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: blob,
  });
  const info = await reply.json();
  if (opened !== state.opened) return;
  state.volume = info;
  state.point = info.shape.map((n) => Math.floor(n / 2));
  // a single slice (one DICOM file) is shown in its own plane, the one with one slice; else axial
  $("plane").value = PLANES.find((p) => info.planes[p].count === 1) || "axial";
  const [windows] = await Promise.all([windowRanges(info.window), fetchSlice($("plane").value)]);
  if (opened !== state.opened) return;
  state.wl = windows[info.window];
  state.preset = info.window;
  $("window").replaceChildren(...info.windows.map((w) => new Option(w, w, false, w === info.window)), new Option("custom (dragged)", "custom"));
  $("volume-controls").hidden = false;
  $("planes").hidden = false;
  await showPlane();
  const plane = $("plane").value;
  status("open-status", `${name}: volume ${info.shape.join(" x ")} (R-A-S voxels, ${info.spacing.map((s) => s.toFixed(2)).join(" x ")} mm), ${info.planes[plane].count} ${plane} slices`, "done");
}

// --- volume geometry: a display slice's pixel (c, r) of plane p at index n <-> voxel [i, j, k] (RAS+);
// axial: i = X-1-c, j = Y-1-r (index k); coronal: i = X-1-c, k = Z-1-r (index j); sagittal: j = Y-1-c,
// k = Z-1-r (index i), as medground.io.display.slice_volume lays them out (image left = patient right)
const AXIS = { axial: 2, coronal: 1, sagittal: 0 };
const COLUMN_ROW = { axial: [0, 1], coronal: [0, 2], sagittal: [1, 2] };
function toPixel(plane, point) {
  const [a, b] = COLUMN_ROW[plane], shape = state.volume.shape;
  return [shape[a] - 1 - point[a], shape[b] - 1 - point[b]];
}
function fromPixel(plane, point, c, r) {
  const [a, b] = COLUMN_ROW[plane], shape = state.volume.shape, next = [...point];
  next[a] = Math.min(Math.max(shape[a] - 1 - Math.floor(c), 0), shape[a] - 1);
  next[b] = Math.min(Math.max(shape[b] - 1 - Math.floor(r), 0), shape[b] - 1);
  return next;
}
function sliceMM(plane) {
  const [row, col] = state.volume.planes[plane].pixel_mm;
  return [col, row];
}
async function fetchSlice(plane) {
  const index = state.point[AXIS[plane]];
  const have = state.slices[plane];
  if (have && have.index === index && have.volume === state.volume.id) return have;
  const { id, planes } = state.volume;
  const reply = await api(`/v1/volumes/${id}/${plane}/${index}.f32`);
  const values = new Float32Array(await reply.arrayBuffer());
  const got = { volume: id, index, values, width: planes[plane].width, height: planes[plane].height };
  if (state.volume && state.volume.id === id && state.point[AXIS[plane]] === index) state.slices[plane] = got;
  return got;
}
function windowed(slice, target) {
  // float values -> grey RGBA: lo -> 0, hi -> 255, clipped, round half up (medground.io.display.window_ct)
  const [lo, hi] = state.wl, span = hi > lo ? hi - lo : Infinity; // hi <= lo: all black, as the server
  target.width = slice.width;
  target.height = slice.height;
  const c = target.getContext("2d");
  const pixels = c.createImageData(slice.width, slice.height);
  const out = new Uint32Array(pixels.data.buffer), values = slice.values;
  for (let n = 0; n < values.length; n++) {
    let g = ((values[n] - lo) * 255) / span; // the same operations in the same order: the same bytes
    g = g < 0 ? 0 : g > 255 ? 255 : Math.floor(g + 0.5);
    out[n] = 0xff000000 | (g << 16) | (g << 8) | g;
  }
  c.putImageData(pixels, 0, 0);
}
let sliceToken = 0;
async function showPlane() {
  // the main view's plane at the crosshair, then the three small views
  const plane = $("plane").value, mine = ++sliceToken;
  const count = state.volume.planes[plane].count;
  $("slice").max = String(count - 1);
  $("slice").value = String(state.point[AXIS[plane]]);
  $("slice-out").textContent = $("slice").value;
  const slice = await fetchSlice(plane);
  if (mine !== sliceToken) return; // a newer slice was asked for meanwhile
  state.mm = sliceMM(plane);
  windowed(slice, picture);
  setPicture(picture, state.volume.planes[plane].edges, true);
  if (!state.firstSliceMarked) {
    state.firstSliceMarked = true;
    performance.mark("medground-first-slice");
    view.dataset.firstSlice = "1";
  }
  await drawPlanes();
}
async function drawPlanes() {
  const volume = state.volume;
  for (const plane of PLANES) {
    if (!volume || state.volume !== volume) return; // another file opened meanwhile
    const slice = await fetchSlice(plane);
    if (state.volume !== volume) return;
    const canvas = $("plane-" + plane);
    const off = document.createElement("canvas");
    windowed(slice, off);
    const [W, H] = sizeCanvas(canvas);
    const c = canvas.getContext("2d");
    const [cm, rm] = sliceMM(plane);
    const k = Math.min(W / (slice.width * cm), H / (slice.height * rm));
    const [w, h] = [slice.width * cm * k, slice.height * rm * k], [x, y] = [(W - w) / 2, (H - h) / 2];
    c.fillStyle = "#000";
    c.fillRect(0, 0, W, H);
    c.imageSmoothingEnabled = false;
    c.drawImage(off, x, y, w, h);
    const [pc, pr] = toPixel(plane, state.point);
    crosshair(c, x + ((pc + 0.5) * w) / slice.width, y + ((pr + 0.5) * h) / slice.height, [x, y, w, h]);
    canvas.dataset.fit = JSON.stringify([x, y, w / slice.width, h / slice.height]);
    $(`plane-${plane}-index`).textContent = `${slice.index + 1}/${state.volume.planes[plane].count}`;
  }
}
function crosshair(c, x, y, [left, top, w, h]) {
  c.strokeStyle = "rgba(80, 255, 120, 0.75)";
  c.lineWidth = 1;
  c.setLineDash([]);
  c.beginPath();
  c.moveTo(left, Math.round(y) + 0.5); c.lineTo(left + w, Math.round(y) + 0.5);
  c.moveTo(Math.round(x) + 0.5, top); c.lineTo(Math.round(x) + 0.5, top + h);
  c.stroke();
}
function movePoint(next) {
  const plane = $("plane").value;
  const changed = next[AXIS[plane]] !== state.point[AXIS[plane]];
  state.point = next;
  if (changed) { resetAnswer(); state.history = []; } // a conversation is about one slice
  showPlane().catch((error) => status("open-status", "Slice: " + error.message, "error"));
}
$("plane").addEventListener("change", () => {
  state.box = null;
  resetAnswer();
  state.history = [];
  fitView();
  showPlane().catch((error) => status("open-status", "Slice: " + error.message, "error"));
});
$("slice").addEventListener("input", () => {
  const next = [...state.point];
  next[AXIS[$("plane").value]] = Number($("slice").value);
  $("slice-out").textContent = $("slice").value;
  movePoint(next);
});
async function windowRanges(name) {
  // window name -> [lo, hi]; the volume's percentiles only when asked for (the server reads every voxel)
  const wanted = name === "percentiles" && !("percentiles" in state.windows) ? "?percentiles=true" : "";
  if (wanted || !Object.keys(state.windows).length) state.windows = await (await api(`/v1/volumes/${state.volume.id}/windows.json${wanted}`)).json();
  return state.windows;
}
$("window").addEventListener("change", async () => {
  if ($("window").value === "custom") return;
  state.preset = $("window").value;
  try { state.wl = (await windowRanges(state.preset))[state.preset]; } catch (error) { status("open-status", "Window: " + error.message, "error"); return; }
  rewindow(true);
});
for (const plane of PLANES) {
  $("plane-" + plane).addEventListener("click", (event) => {
    const canvas = event.currentTarget, rect = canvas.getBoundingClientRect();
    const [x, y, sx, sy] = JSON.parse(canvas.dataset.fit || "[0,0,1,1]");
    movePoint(fromPixel(plane, state.point, (event.clientX - rect.left - x) / sx, (event.clientY - rect.top - y) / sy));
  });
}
function rewindow(planesToo) {
  // the window changed: the main slice (and, once a drag ends, the small views) drawn again
  const slice = state.slices[$("plane").value];
  if (!slice) return;
  windowed(slice, picture);
  draw();
  const [lo, hi] = state.wl;
  $("wl-out").textContent = `W ${Math.round(hi - lo)} L ${Math.round((lo + hi) / 2)}`;
  if (planesToo) drawPlanes();
}

// A DICOM series picked as several files travels as one zip (stored, no compression).
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function put(view, fields) {
  fields.forEach(([at, value, size]) => (size === 4 ? view.setUint32(at, value, true) : view.setUint16(at, value, true)));
  return view;
}
async function zipFiles(files) {
  const parts = [], central = [];
  let offset = 0;
  for (const file of files) {
    const data = new Uint8Array(await file.arrayBuffer());
    const name = new TextEncoder().encode(file.name);
    const crc = crc32(data);
    const local = put(new DataView(new ArrayBuffer(30)), [[0, 0x04034b50, 4], [4, 20, 2], [14, crc, 4], [18, data.length, 4], [22, data.length, 4], [26, name.length, 2]]);
    const entry = put(new DataView(new ArrayBuffer(46)), [[0, 0x02014b50, 4], [4, 20, 2], [6, 20, 2], [16, crc, 4], [20, data.length, 4], [24, data.length, 4], [28, name.length, 2], [42, offset, 4]]);
    parts.push(local, name, data);
    central.push(entry, name);
    offset += 30 + name.length + data.length;
  }
  const size = central.reduce((n, part) => n + part.byteLength, 0);
  const end = put(new DataView(new ArrayBuffer(22)), [[0, 0x06054b50, 4], [8, files.length, 2], [10, files.length, 2], [12, size, 4], [16, offset, 4]]);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

// --- the view: the picture at its physical aspect (pixel mm), zoomed and panned; masks, boxes with labels
// at a fixed screen size, the user's box and the crosshair drawn over it in screen pixels
function setPicture(source, edges, keepView) {
  if (source !== picture) {
    picture.width = source.width;
    picture.height = source.height;
    picture.getContext("2d").drawImage(source, 0, 0);
  }
  for (const side of ["top", "bottom", "left", "right"]) $("edge-" + side).textContent = edges ? edges[side] : "";
  $("drop-hint").hidden = true;
  if (!keepView) fitView();
  draw();
}
function sizeCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1, rect = canvas.getBoundingClientRect();
  const [W, H] = [Math.max(1, Math.round(rect.width * ratio)), Math.max(1, Math.round(rect.height * ratio))];
  if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
  canvas.getContext("2d").setTransform(ratio, 0, 0, ratio, 0, 0);
  return [rect.width, rect.height];
}
function layout() {
  // {x, y, sx, sy}: picture pixel (u, v) is at CSS pixel (x + u sx, y + v sy) of the view
  const rect = view.getBoundingClientRect();
  const [cm, rm] = state.mm, [w, h] = [picture.width * cm, picture.height * rm];
  const fit = Math.min((rect.width - 40) / w, (rect.height - 40) / h);
  const k = fit * state.zoom;
  return { x: (rect.width - w * k) / 2 + state.pan[0], y: (rect.height - h * k) / 2 + state.pan[1], sx: k * cm, sy: k * rm };
}
const toScreen = (u, v, at = layout()) => [at.x + u * at.sx, at.y + v * at.sy];
const toPicture = (x, y, at = layout()) => [(x - at.x) / at.sx, (y - at.y) / at.sy];
function fitView() {
  state.zoom = 1;
  state.pan = [0, 0];
  $("zoom-value").textContent = "100%";
}
function zoomAt(factor, x, y) {
  // zoom by ``factor`` keeping the view point (x, y) (CSS pixels) over the same picture point
  if (!picture.width) return;
  const at = layout(), [u, v] = toPicture(x, y, at);
  state.zoom = Math.min(Math.max(state.zoom * factor, 0.25), 32);
  const after = layout(), [nx, ny] = toScreen(u, v, after);
  state.pan = [state.pan[0] + x - nx, state.pan[1] + y - ny];
  $("zoom-value").textContent = `${Math.round(state.zoom * 100)}%`;
  draw();
}
function draw() {
  const [W, H] = sizeCanvas(view);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, W, H);
  view.dataset.boxes = String(state.answer.length);
  view.dataset.masks = String(state.masks.filter((m) => m.on).length);
  $("box-text").textContent = state.box ? `Box [${state.box.join(", ")}]` : "No box drawn.";
  $("download-boxes").disabled = state.answer.length === 0;
  if (!picture.width) return;
  const at = layout(), [w, h] = [picture.width * at.sx, picture.height * at.sy];
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(picture, at.x, at.y, w, h);
  for (const mask of state.masks) {
    if (!mask.on) continue;
    ctx.globalAlpha = mask.opacity;
    ctx.drawImage(mask.canvas, at.x, at.y, w, h);
  }
  ctx.globalAlpha = 1;
  state.answer.forEach(({ label, box }, i) => drawBox(box, COLOURS[i % COLOURS.length], label, at));
  if (state.box) drawBox(state.box, "#ffd33d", "", at, [6, 4]);
  if (state.volume && state.point) {
    const [c, r] = toPixel($("plane").value, state.point);
    crosshair(ctx, ...toScreen(c + 0.5, r + 0.5, at), [at.x, at.y, w, h]);
  }
}
function drawBox(box, colour, label, at, dash = []) {
  const [x0, y0] = toScreen(box[0], box[1], at), [x1, y1] = toScreen(box[2], box[3], at);
  ctx.strokeStyle = colour;
  ctx.lineWidth = 2;
  ctx.setLineDash(dash);
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.setLineDash([]);
  if (!label) return;
  ctx.font = `${LABEL_PX}px system-ui, sans-serif`;
  const width = ctx.measureText(label).width + 6, tall = LABEL_PX + 4;
  const top = y0 - tall >= 0 ? y0 - tall : y0; // above the box, or inside it at the view's top
  ctx.fillStyle = colour;
  ctx.fillRect(x0 - 1, top, width, tall);
  ctx.fillStyle = "#000";
  ctx.textBaseline = "middle";
  ctx.fillText(label, x0 + 2, top + tall / 2);
}
window.addEventListener("resize", draw);
new ResizeObserver(() => { draw(); if (state.volume && state.point) drawPlanes(); }).observe($("stage"));

// --- masks: each shown in its colour, with its own toggle and opacity
async function maskCanvas(pngBase64, colour) {
  // a 0/255 mask PNG -> a canvas of the picture's size, the mask in colour (opaque), elsewhere clear
  const image = await decode(await (await fetch("data:image/png;base64," + pngBase64)).blob());
  const canvas = Object.assign(document.createElement("canvas"), { width: image.width, height: image.height });
  const c = canvas.getContext("2d");
  c.drawImage(image, 0, 0);
  const pixels = c.getImageData(0, 0, canvas.width, canvas.height);
  const [r, g, b] = [1, 3, 5].map((k) => parseInt(colour.slice(k, k + 2), 16));
  for (let i = 0; i < pixels.data.length; i += 4) pixels.data.set(pixels.data[i] > 127 ? [r, g, b, 255] : [0, 0, 0, 0], i);
  c.putImageData(pixels, 0, 0);
  return canvas;
}
async function addMask(name, pngBase64, colour) {
  const mask = { name, png: pngBase64, colour, canvas: await maskCanvas(pngBase64, colour), on: true, opacity: 0.45 };
  state.masks.push(mask);
  const row = $("mask-row").content.firstElementChild.cloneNode(true);
  row.querySelector(".swatch").style.background = colour;
  row.querySelector(".mask-name").textContent = name;
  row.querySelector(".mask-on").addEventListener("change", (event) => { mask.on = event.target.checked; draw(); });
  row.querySelector(".mask-opacity").addEventListener("input", (event) => { mask.opacity = Number(event.target.value) / 100; draw(); });
  $("mask-list").append(row);
  setMaskDownload(pngBase64);
}
function resetAnswer() {
  state.answer = [];
  state.masks = [];
  state.slice = null;
  $("mask-list").replaceChildren();
  $("download-mask").removeAttribute("href");
  $("download-mask").setAttribute("aria-disabled", "true");
  $("dice").textContent = "";
  draw();
}
function resetForNewPicture() {
  // a new file: nothing of the last one's conversation, supports, truth mask, answers or box carries over
  state.image = null;
  state.volume = null;
  state.point = null;
  state.slices = {};
  state.windows = {};
  state.history = [];
  state.box = null;
  picture.width = 0;
  $("drop-hint").hidden = false;
  for (const side of ["top", "bottom", "left", "right"]) $("edge-" + side).textContent = "";
  fitView();
  $("chat-log").replaceChildren();
  $("supports").replaceChildren();
  $("truth").value = "";
  $("structure").value = "";
  status("ask-status", "");
  status("segment-status", "");
  $("window").value = "";
  $("wl-out").textContent = "";
  resetAnswer();
}

// --- pointer on the view: the chosen tool with the left button, window/level with the right, pan with
// the middle; wheel steps slices (Ctrl+wheel zooms), arrow keys step slices, +/- zoom
let drag = null;
const tool = () => document.querySelector("input[name=tool]:checked").value;
function viewPoint(event) {
  const rect = view.getBoundingClientRect();
  return [event.clientX - rect.left, event.clientY - rect.top];
}
function picturePixel(event) {
  const [u, v] = toPicture(...viewPoint(event));
  return [Math.min(Math.max(Math.round(u), 0), picture.width), Math.min(Math.max(Math.round(v), 0), picture.height)];
}
view.addEventListener("contextmenu", (event) => event.preventDefault());
view.addEventListener("pointerdown", (event) => {
  if (!picture.width) return;
  const mode = event.button === 2 ? "wl" : event.button === 1 ? "pan" : tool();
  if (mode === "wl" && !state.volume) return;
  drag = { mode, from: viewPoint(event), pixel: picturePixel(event), pan: [...state.pan], wl: state.wl && [...state.wl] };
  view.setPointerCapture(event.pointerId);
  event.preventDefault();
  if (mode === "point") pointAt(event);
});
view.addEventListener("pointermove", (event) => {
  if (!drag) return;
  const [x, y] = viewPoint(event), [dx, dy] = [x - drag.from[0], y - drag.from[1]];
  if (drag.mode === "box") {
    const [u, v] = picturePixel(event), [a, b] = drag.pixel;
    state.box = [Math.min(a, u), Math.min(b, v), Math.max(a, u), Math.max(b, v)];
    draw();
  } else if (drag.mode === "pan") {
    state.pan = [drag.pan[0] + dx, drag.pan[1] + dy];
    draw();
  } else if (drag.mode === "wl") {
    // right: wider window, down: higher level; one CSS pixel = 1/256 of the starting width
    const [lo, hi] = drag.wl, width = Math.max(1e-6, (hi - lo) * Math.exp(dx / 256)), level = (lo + hi) / 2 + (dy * (hi - lo)) / 256;
    state.wl = [level - width / 2, level + width / 2];
    $("window").value = "custom";
    rewindow(false);
    const at = event.timeStamp;
    if (state.wlTimes.length >= 1000) { state.wlTimes = []; state.wlFrames = []; } // a bench reads fewer
    state.wlTimes.push(performance.now() - at);
    requestAnimationFrame(() => state.wlFrames.push(performance.now() - at));
  } else if (drag.mode === "point") pointAt(event);
});
function endDrag() {
  if (!drag) return;
  if (drag.mode === "box" && state.box && (state.box[2] - state.box[0] < 2 || state.box[3] - state.box[1] < 2)) state.box = null;
  if (drag.mode === "wl") drawPlanes();
  drag = null;
  draw();
}
view.addEventListener("pointerup", endDrag);
view.addEventListener("pointercancel", endDrag);
function pointAt(event) {
  if (!state.volume) return;
  const [u, v] = toPicture(...viewPoint(event));
  movePoint(fromPixel($("plane").value, state.point, u, v));
}
function stepSlice(step) {
  if (!state.volume) return;
  const plane = $("plane").value, next = [...state.point];
  next[AXIS[plane]] = Math.min(Math.max(next[AXIS[plane]] + step, 0), state.volume.planes[plane].count - 1);
  if (next[AXIS[plane]] !== state.point[AXIS[plane]]) movePoint(next);
}
view.addEventListener("wheel", (event) => {
  if (!picture.width) return;
  event.preventDefault();
  if (event.ctrlKey || !state.volume) zoomAt(event.deltaY < 0 ? 1.25 : 0.8, ...viewPoint(event));
  else stepSlice(event.deltaY > 0 ? 1 : -1);
}, { passive: false });
$("stage").addEventListener("keydown", (event) => {
  const rect = view.getBoundingClientRect();
  if (event.key === "+" || event.key === "=") zoomAt(1.25, rect.width / 2, rect.height / 2);
  else if (event.key === "-") zoomAt(0.8, rect.width / 2, rect.height / 2);
  else if (["ArrowUp", "ArrowRight"].includes(event.key)) stepSlice(1);
  else if (["ArrowDown", "ArrowLeft"].includes(event.key)) stepSlice(-1);
  else return;
  event.preventDefault();
});
for (const input of document.querySelectorAll("input[name=tool]")) input.addEventListener("change", () => { $("stage").dataset.tool = tool(); });
$("zoom-in").addEventListener("click", () => { const r = view.getBoundingClientRect(); zoomAt(1.25, r.width / 2, r.height / 2); });
$("zoom-out").addEventListener("click", () => { const r = view.getBoundingClientRect(); zoomAt(0.8, r.width / 2, r.height / 2); });
$("zoom-fit").addEventListener("click", () => { fitView(); draw(); });
$("clear-box").addEventListener("click", () => { state.box = null; draw(); });

// --- asking: /v1/ground or the OpenAI chat route; the answer's boxes (and masks) are drawn
function sliceRef() {
  const plane = $("plane").value;
  return { volume: state.volume.id, plane, index: state.point[AXIS[plane]], window: state.preset };
}
function pictureFields() {
  if (!state.image && !state.volume) throw new Error("open an image or a volume first");
  return state.volume ? { volume_slice: sliceRef() } : { image: state.image };
}
function readable(text) {
  // the model's text without its dialect's markers: boxes become "[box]" (they are drawn on the image)
  return text.replace(/<\|box_start\|>[^<]*<\|box_end\|>/g, " [box]").replace(/<\|[a-z_]+\|>/g, "").trim();
}
function logLine(text, role) {
  const item = document.createElement("li");
  item.className = role;
  item.dataset.raw = text;
  item.textContent = role === "assistant" ? readable(text) : text;
  $("chat-log").append(item);
  item.scrollIntoView({ block: "nearest" });
}
async function ask() {
  const question = $("question").value.trim();
  if (!question) return;
  let fields;
  try { fields = pictureFields(); } catch (error) { status("ask-status", error.message, "error"); return; }
  const opened = state.opened, box = state.box ? [...state.box] : null;
  logLine(question + (box ? `  [box ${box.join(", ")}]` : ""), "user");
  $("question").value = "";
  $("ask").disabled = true;
  status("ask-status", `Asking ${$("model-note").dataset.model || "the model"}...`, "busy");
  try {
    const [text, found] = $("route").value === "ground" ? await askGround(fields, question, box) : await askChat(fields, question, box);
    if (opened !== state.opened) return; // another file was opened meanwhile
    await showAnswer(found);
    logLine(text || "(no text)", "assistant");
    status("ask-status", `${state.answer.length} box${state.answer.length === 1 ? "" : "es"} drawn`, "done");
    if (state.answer.length) $("stage").scrollIntoView({ block: "nearest" });
  } catch (error) {
    logLine(error.message, "error");
    status("ask-status", error.message, "error");
  } finally {
    $("ask").disabled = false;
  }
}
async function askGround(fields, question, box) {
  const body = { ...fields, question, ...(box ? { box } : {}), ...($("want-masks").checked ? { segment: true } : {}) };
  const reply = await (await postJSON("/v1/ground", body)).json();
  return [reply.answer, reply];
}
async function askChat(fields, question, box) {
  const picturePart = state.volume ? { type: "volume_slice", volume_slice: fields.volume_slice } : { type: "image_url", image_url: { url: state.image } };
  const content = [...(state.history.length ? [] : [picturePart]), { type: "text", text: question }, ...(box ? [{ type: "box", box }] : [])];
  const messages = [...state.history, { role: "user", content }];
  const model = $("model-note").dataset.model || "bird-nano";
  const request = { model, messages, ...($("want-masks").checked ? { medground: { segment: true } } : {}) };
  const message = (await (await postJSON("/v1/chat/completions", request)).json()).choices[0].message;
  state.history = [...messages, { role: "assistant", content: message.content }];
  return [message.content, message.medground];
}
async function showAnswer(found) {
  resetAnswer();
  state.answer = found.boxes || [];
  state.slice = found.slice || null;
  for (const [i, item] of state.answer.entries()) {
    if (item.mask && item.mask.mask_png) await addMask(item.label || `box ${i + 1}`, item.mask.mask_png, COLOURS[i % COLOURS.length]);
  }
  draw();
  performance.mark("medground-answer-drawn");
}
$("ask-form").addEventListener("submit", (event) => { event.preventDefault(); ask(); });
$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); ask(); }
});

// --- downloads: the answer's boxes as JSON (with the slice they refer to), the mask as PNG
$("download-boxes").addEventListener("click", () => {
  const payload = { width: picture.width, height: picture.height, slice: state.slice, boxes: state.answer.map(({ label, box }) => ({ label, box })) };
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([JSON.stringify(payload, null, 2)], { type: "application/json" }));
  link.download = "boxes.json";
  link.click();
});
function setMaskDownload(pngBase64) {
  $("download-mask").href = "data:image/png;base64," + pngBase64;
  $("download-mask").removeAttribute("aria-disabled");
}

// --- in-context segmentation: support images with masks and/or a structure name -> the query's mask
function addSupport() {
  const row = $("support-row").content.firstElementChild.cloneNode(true);
  row.querySelector(".remove-support").addEventListener("click", () => row.remove());
  $("supports").append(row);
  row.querySelector(".support-image").focus();
}
$("add-support").addEventListener("click", addSupport);
async function maskBits(source) {
  // a mask (File or base64 PNG) -> Uint8Array of 0/1, with its size
  const blob = typeof source === "string" ? await (await fetch("data:image/png;base64," + source)).blob() : source;
  const image = await decode(blob);
  const canvas = new OffscreenCanvas(image.width, image.height);
  const c = canvas.getContext("2d");
  c.drawImage(image, 0, 0);
  const data = c.getImageData(0, 0, image.width, image.height).data;
  const bits = new Uint8Array(image.width * image.height);
  for (let i = 0; i < bits.length; i++) bits[i] = data[4 * i] > 0 || data[4 * i + 1] > 0 || data[4 * i + 2] > 0 ? 1 : 0;
  return { bits, width: image.width, height: image.height };
}
async function dice(maskPng, truth) {
  const [a, b] = [await maskBits(maskPng), await maskBits(truth)];
  if (a.width !== b.width || a.height !== b.height) return `; the truth mask is ${b.width} x ${b.height}, not the image's size`;
  let both = 0, sum = 0;
  for (let i = 0; i < a.bits.length; i++) { both += a.bits[i] & b.bits[i]; sum += a.bits[i] + b.bits[i]; }
  return `; Dice ${(sum ? (2 * both) / sum : 1).toFixed(3)}`;
}
async function segment() {
  let fields;
  try { fields = pictureFields(); } catch (error) { status("segment-status", error.message, "error"); return; }
  const opened = state.opened, support = [];
  for (const row of $("supports").children) {
    const image = row.querySelector(".support-image").files[0];
    const mask = row.querySelector(".support-mask").files[0];
    if (image && mask) support.push({ image: await readDataURL(image), mask: await readDataURL(mask) });
  }
  const text = $("structure").value.trim();
  const box = state.box ? { box: [...state.box] } : {};
  const body = { ...(state.volume ? { query_slice: fields.volume_slice } : { query: fields.image }), support, ...(text ? { text } : {}), ...box };
  $("segment").disabled = true;
  status("segment-status", "Segmenting...", "busy");
  try {
    const reply = await (await postJSON("/v1/segment", body)).json();
    if (opened !== state.opened) return;
    await addMask(text || "segmentation", reply.mask_png, "#00d0c0");
    draw();
    const truth = $("truth").files[0];
    $("dice").textContent = `Mask: ${reply.area} pixels of ${reply.width} x ${reply.height}` + (truth ? await dice(reply.mask_png, truth) : "");
    status("segment-status", "done", "done");
  } catch (error) {
    status("segment-status", error.message, "error");
  } finally {
    $("segment").disabled = false;
  }
}
$("segment-form").addEventListener("submit", (event) => { event.preventDefault(); segment(); });

// --- file input and drag-and-drop
$("file").addEventListener("change", () => openFiles([...$("file").files]));
const stage = $("stage");
stage.addEventListener("dragover", (event) => { event.preventDefault(); stage.classList.add("over"); });
stage.addEventListener("dragleave", () => stage.classList.remove("over"));
stage.addEventListener("drop", (event) => {
  event.preventDefault();
  stage.classList.remove("over");
  openFiles([...event.dataTransfer.files]);
});
