// medground's page: open an image or a volume, draw a box, ask, see boxes and masks; segment in context.
// Plain browser JavaScript, no build step, nothing fetched from elsewhere. Coordinates: every box is
// [x0, y0, x1, y1] in pixels of the image (or volume slice) shown, x1/y1 exclusive, as the API uses.
"use strict";

const $ = (id) => document.getElementById(id);
// pixel values as stored: no colour management (a gAMA or ICC chunk must not change what is shown)
const decode = (blob) => createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
const COLOURS = ["#ff5a5a", "#4cd964", "#59b0ff", "#ffcc00", "#d17bff", "#00d0c0"];
const view = $("view");
const ctx = view.getContext("2d");
const state = {
  image: null, // data URL of an opened PNG/JPEG (null for a volume)
  volume: null, // VolumeInfo of an uploaded volume
  picture: null, // the ImageBitmap drawn
  box: null, // the user's box, image pixels
  answer: [], // [{label, box, mask?: {mask_png}}] of the last answer
  maskImages: [], // decoded masks of the last answer, [HTMLCanvasElement]
  segMask: null, // {png, canvas} of the last /v1/segment answer
  history: [], // chat messages so far (chat route)
  slice: null, // SliceInfo the answer refers to
  firstSliceMarked: false,
};

// --- access token: asked once when the server answers 401, kept for this tab in sessionStorage
function authHeaders() {
  const token = sessionStorage.getItem("medground-token");
  return token ? { Authorization: "Bearer " + token } : {};
}
let tokenWaiters = [];
function askToken() {
  $("token-form").hidden = false;
  $("token").focus();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("medground-token", $("token").value);
  $("token-form").hidden = true;
  tokenWaiters.forEach((resolve) => resolve());
  tokenWaiters = [];
});
async function api(path, options = {}) {
  for (;;) {
    const headers = { ...(options.headers || {}), ...authHeaders() };
    const reply = await fetch(path, { ...options, headers });
    if (reply.status === 401) { await askToken(); continue; }
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

function say(text) { $("status").textContent = text; }

// --- opening files: content decides (PNG/JPEG shown here; DICOM, NIfTI, zip uploaded as a volume)
async function kind(file) {
  const head = new Uint8Array(await file.slice(0, 132).arrayBuffer());
  if (head[0] === 0x89 && head[1] === 0x50 && head[2] === 0x4e && head[3] === 0x47) return "image";
  if (head[0] === 0xff && head[1] === 0xd8) return "image";
  return "volume";
}
async function openFiles(files) {
  if (!files.length) return;
  performance.clearMarks();
  performance.mark("medground-file-change");
  state.firstSliceMarked = false;
  delete view.dataset.firstSlice;
  try {
    if (files.length === 1 && (await kind(files[0])) === "image") await openImage(files[0]);
    else await openVolume(files.length === 1 ? files[0] : await zipFiles(files), files.length === 1 ? files[0].name : "series.zip");
  } catch (error) { say("Could not open: " + error.message); }
}
function readDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}
async function openImage(file) {
  state.image = await readDataURL(file);
  state.volume = null;
  $("volume-controls").hidden = true;
  resetAnswer(true);
  show(await decode(file), null);
  say(`${file.name}: ${view.width} x ${view.height} pixels`);
}
async function openVolume(blob, name) {
  say(`Uploading ${name} (${(blob.size / 1048576).toFixed(1)} MB)...`);
  const modality = $("modality").value ? `&modality=${$("modality").value}` : "";
  const reply = await api(`/v1/volumes?name=${encodeURIComponent(name)}${modality}`, { method: "POST", body: blob });
  const info = await reply.json();
  state.volume = info;
  state.image = null;
  $("window").replaceChildren(...info.windows.map((w) => new Option(w, w, false, w === info.window)));
  $("volume-controls").hidden = false;
  resetAnswer(true);
  // a single slice (one DICOM file) is shown in its own plane, the one with one slice; else axial
  $("plane").value = ["axial", "coronal", "sagittal"].find((p) => info.planes[p].count === 1) || "axial";
  setPlane(Math.floor(info.planes[$("plane").value].count / 2));
  await loadSlice();
  const plane = $("plane").value;
  say(`${name}: volume ${info.shape.join(" x ")} (R-A-S voxels), ${info.planes[plane].count} ${plane} slices`);
}
function setPlane(index) {
  const plane = state.volume.planes[$("plane").value];
  $("slice").max = String(plane.count - 1);
  $("slice").value = String(Math.min(index, plane.count - 1));
  $("slice-out").textContent = $("slice").value;
}
function sliceRef() {
  return { volume: state.volume.id, plane: $("plane").value, index: Number($("slice").value), window: $("window").value };
}
let sliceToken = 0;
async function loadSlice() {
  const ref = sliceRef();
  const mine = ++sliceToken;
  const reply = await api(`/v1/volumes/${ref.volume}/${ref.plane}/${ref.index}.png?window=${encodeURIComponent(ref.window)}`);
  const bitmap = await decode(await reply.blob());
  if (mine !== sliceToken) return; // a newer slice was asked for meanwhile
  show(bitmap, state.volume.planes[ref.plane].edges);
  $("slice-out").textContent = String(ref.index);
  if (!state.firstSliceMarked) {
    state.firstSliceMarked = true;
    performance.mark("medground-first-slice");
    view.dataset.firstSlice = "1";
  }
}
async function changeSlice() {
  const ref = sliceRef();
  const same = state.slice && state.slice.plane === ref.plane && state.slice.index === ref.index;
  if (!same) { resetAnswer(false); state.history = []; } // a conversation is about one slice
  try { await loadSlice(); } catch (error) { say("Slice: " + error.message); }
}
$("plane").addEventListener("change", () => { setPlane(Math.floor(state.volume.planes[$("plane").value].count / 2)); state.box = null; changeSlice(); });
$("slice").addEventListener("input", () => { $("slice-out").textContent = $("slice").value; changeSlice(); });
$("window").addEventListener("change", changeSlice);

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
async function zipFiles(files) {
  const parts = [], central = [];
  let offset = 0;
  for (const file of files) {
    const data = new Uint8Array(await file.arrayBuffer());
    const name = new TextEncoder().encode(file.name);
    const crc = crc32(data);
    const local = new DataView(new ArrayBuffer(30));
    [[0, 0x04034b50, 4], [4, 20, 2], [14, crc, 4], [18, data.length, 4], [22, data.length, 4], [26, name.length, 2]]
      .forEach(([at, value, size]) => (size === 4 ? local.setUint32(at, value, true) : local.setUint16(at, value, true)));
    const entry = new DataView(new ArrayBuffer(46));
    [[0, 0x02014b50, 4], [4, 20, 2], [6, 20, 2], [16, crc, 4], [20, data.length, 4], [24, data.length, 4], [28, name.length, 2], [42, offset, 4]]
      .forEach(([at, value, size]) => (size === 4 ? entry.setUint32(at, value, true) : entry.setUint16(at, value, true)));
    parts.push(local, name, data);
    central.push(entry, name);
    offset += 30 + name.length + data.length;
  }
  const size = central.reduce((n, part) => n + part.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  [[0, 0x06054b50, 4], [8, files.length, 2], [10, files.length, 2], [12, size, 4], [16, offset, 4]]
    .forEach(([at, value, n]) => (n === 4 ? end.setUint32(at, value, true) : end.setUint16(at, value, true)));
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

// --- drawing: the picture, the answer's masks and boxes with labels, the user's box, edge labels
function show(bitmap, edges) {
  state.picture = bitmap;
  view.width = bitmap.width;
  view.height = bitmap.height;
  for (const side of ["top", "bottom", "left", "right"]) $("edge-" + side).textContent = edges ? edges[side] : "";
  $("drop-hint").hidden = true;
  fit();
  draw();
}
function fit() {
  // shown as large as the stage allows (small slices scaled up, pixels kept square)
  if (!state.picture) return;
  const room = $("stage").clientWidth - 48;
  const scale = Math.min(room / view.width, (window.innerHeight * 0.7) / view.height);
  view.style.width = `${Math.floor(view.width * scale)}px`;
  view.style.height = `${Math.floor(view.height * scale)}px`;
}
window.addEventListener("resize", fit);
function draw() {
  if (!state.picture) return;
  ctx.drawImage(state.picture, 0, 0);
  state.maskImages.forEach((mask) => ctx.drawImage(mask, 0, 0));
  if (state.segMask) ctx.drawImage(state.segMask.canvas, 0, 0);
  const line = Math.max(1, Math.round(view.width / 300));
  ctx.font = `${Math.max(11, Math.round(view.width / 45))}px system-ui, sans-serif`;
  state.answer.forEach(({ label, box }, i) => {
    const colour = COLOURS[i % COLOURS.length];
    ctx.strokeStyle = colour;
    ctx.lineWidth = line * 2;
    ctx.setLineDash([]);
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
    if (label) {
      const width = ctx.measureText(label).width + 6;
      ctx.fillStyle = colour;
      ctx.fillRect(box[0], Math.max(0, box[1] - parseInt(ctx.font) - 4), width, parseInt(ctx.font) + 4);
      ctx.fillStyle = "#000";
      ctx.fillText(label, box[0] + 3, Math.max(parseInt(ctx.font), box[1] - 4));
    }
  });
  if (state.box) {
    const [x0, y0, x1, y1] = state.box;
    ctx.strokeStyle = "#ffd33d";
    ctx.lineWidth = line * 2;
    ctx.setLineDash([line * 5, line * 3]);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
  }
  view.dataset.boxes = String(state.answer.length);
  view.dataset.masks = String(state.maskImages.length + (state.segMask ? 1 : 0));
  $("box-text").textContent = state.box ? `Box [${state.box.join(", ")}]` : "No box drawn.";
  $("download-boxes").disabled = state.answer.length === 0;
}
async function maskCanvas(pngBase64, colour) {
  // a 0/255 mask PNG -> a canvas of the image's size, the mask in colour at 45% opacity, elsewhere clear
  const image = await decode(await (await fetch("data:image/png;base64," + pngBase64)).blob());
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const c = canvas.getContext("2d");
  c.drawImage(image, 0, 0);
  const pixels = c.getImageData(0, 0, canvas.width, canvas.height);
  const [r, g, b] = [1, 3, 5].map((k) => parseInt(colour.slice(k, k + 2), 16));
  for (let i = 0; i < pixels.data.length; i += 4) {
    const on = pixels.data[i] > 127;
    pixels.data.set(on ? [r, g, b, 115] : [0, 0, 0, 0], i);
  }
  c.putImageData(pixels, 0, 0);
  return canvas;
}
function resetAnswer(newPicture) {
  state.answer = [];
  state.maskImages = [];
  state.segMask = null;
  state.slice = null;
  if (newPicture) { state.history = []; state.box = null; }
  $("download-mask").removeAttribute("href");
  $("download-mask").setAttribute("aria-disabled", "true");
  $("dice").textContent = "";
  draw();
}

// --- the user's box: drag on the image (mouse), in image pixels
let dragFrom = null;
function imagePoint(event) {
  const rect = view.getBoundingClientRect();
  const x = Math.round(((event.clientX - rect.left) * view.width) / rect.width);
  const y = Math.round(((event.clientY - rect.top) * view.height) / rect.height);
  return [Math.min(Math.max(x, 0), view.width), Math.min(Math.max(y, 0), view.height)];
}
view.addEventListener("mousedown", (event) => { if (state.picture) { dragFrom = imagePoint(event); event.preventDefault(); } });
window.addEventListener("mousemove", (event) => {
  if (!dragFrom) return;
  const [x, y] = imagePoint(event);
  state.box = [Math.min(dragFrom[0], x), Math.min(dragFrom[1], y), Math.max(dragFrom[0], x), Math.max(dragFrom[1], y)];
  draw();
});
window.addEventListener("mouseup", () => {
  if (!dragFrom) return;
  dragFrom = null;
  if (state.box && (state.box[2] - state.box[0] < 2 || state.box[3] - state.box[1] < 2)) state.box = null;
  draw();
});
$("clear-box").addEventListener("click", () => { state.box = null; draw(); });
$("stage").addEventListener("keydown", (event) => {
  if (!state.volume || !["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight"].includes(event.key)) return;
  event.preventDefault();
  const step = event.key === "ArrowUp" || event.key === "ArrowRight" ? 1 : -1;
  const next = Math.min(Math.max(Number($("slice").value) + step, 0), Number($("slice").max));
  if (next !== Number($("slice").value)) { $("slice").value = String(next); changeSlice(); }
});

// --- asking: /v1/ground or the OpenAI chat route; the answer's boxes (and masks) are drawn
function pictureFields() {
  if (!state.picture) throw new Error("open an image or a volume first");
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
  try { fields = pictureFields(); } catch (error) { say(error.message); return; }
  const box = state.box ? [...state.box] : null;
  logLine(question + (box ? `  [box ${box.join(", ")}]` : ""), "user");
  $("question").value = "";
  $("ask").disabled = true;
  try {
    let text, found;
    if ($("route").value === "ground") {
      const body = { ...fields, question, ...(box ? { box } : {}), ...($("want-masks").checked ? { segment: true } : {}) };
      const reply = await (await postJSON("/v1/ground", body)).json();
      text = reply.answer;
      found = reply;
    } else {
      const picturePart = state.volume ? { type: "volume_slice", volume_slice: fields.volume_slice } : { type: "image_url", image_url: { url: state.image } };
      const content = [...(state.history.length ? [] : [picturePart]), { type: "text", text: question }, ...(box ? [{ type: "box", box }] : [])];
      const messages = [...state.history, { role: "user", content }];
      const request = { model: "bird-nano", messages, ...($("want-masks").checked ? { medground: { segment: true } } : {}) };
      const reply = await (await postJSON("/v1/chat/completions", request)).json();
      const message = reply.choices[0].message;
      text = message.content;
      found = message.medground;
      state.history = [...messages, { role: "assistant", content: text }];
    }
    await showAnswer(found);
    logLine(text || "(no text)", "assistant");
  } catch (error) {
    logLine(error.message, "error");
  } finally {
    $("ask").disabled = false;
  }
}
async function showAnswer(found) {
  state.answer = found.boxes || [];
  state.slice = found.slice || null;
  state.maskImages = [];
  for (const [i, item] of state.answer.entries()) {
    if (item.mask && item.mask.mask_png) state.maskImages.push(await maskCanvas(item.mask.mask_png, COLOURS[i % COLOURS.length]));
  }
  const masked = state.answer.find((item) => item.mask && item.mask.mask_png);
  if (masked) setMaskDownload(masked.mask.mask_png);
  draw();
  performance.mark("medground-answer-drawn");
}
$("ask-form").addEventListener("submit", (event) => { event.preventDefault(); ask(); });
$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); ask(); }
});

// --- downloads: the answer's boxes as JSON (with the slice they refer to), the mask as PNG
$("download-boxes").addEventListener("click", () => {
  const payload = { width: view.width, height: view.height, slice: state.slice, boxes: state.answer.map(({ label, box }) => ({ label, box })) };
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
async function segment() {
  let fields;
  try { fields = pictureFields(); } catch (error) { say(error.message); return; }
  const support = [];
  for (const row of $("supports").children) {
    const image = row.querySelector(".support-image").files[0];
    const mask = row.querySelector(".support-mask").files[0];
    if (image && mask) support.push({ image: await readDataURL(image), mask: await readDataURL(mask) });
  }
  const text = $("structure").value.trim();
  const box = state.box ? { box: [...state.box] } : {};
  const body = { ...(state.volume ? { query_slice: fields.volume_slice } : { query: fields.image }), support, ...(text ? { text } : {}), ...box };
  $("segment").disabled = true;
  try {
    const reply = await (await postJSON("/v1/segment", body)).json();
    state.segMask = { png: reply.mask_png, canvas: await maskCanvas(reply.mask_png, "#00d0c0") };
    setMaskDownload(reply.mask_png);
    draw();
    let line = `Mask: ${reply.area} pixels of ${reply.width} x ${reply.height}`;
    const truth = $("truth").files[0];
    if (truth) {
      const [a, b] = [await maskBits(reply.mask_png), await maskBits(truth)];
      if (a.width !== b.width || a.height !== b.height) line += `; the truth mask is ${b.width} x ${b.height}, not the image's size`;
      else {
        let both = 0, sum = 0;
        for (let i = 0; i < a.bits.length; i++) { both += a.bits[i] & b.bits[i]; sum += a.bits[i] + b.bits[i]; }
        line += `; Dice ${(sum ? (2 * both) / sum : 1).toFixed(3)}`;
      }
    }
    $("dice").textContent = line;
  } catch (error) {
    $("dice").textContent = error.message;
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
