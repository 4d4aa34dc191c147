"""The browser viewer served at `GET /`: one self-contained page (inline CSS and JS, no external scripts or fonts,
no build step), so it works offline. It posts the image to `predict?output=index` and draws the overlay itself."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>segwise viewer</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #f6f6f4; }
  header { padding: 10px 16px; background: #263238; color: #fff; display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  main { padding: 16px; }
  #drop { border: 2px dashed #90a4ae; border-radius: 8px; padding: 18px; text-align: center; background: #fff; }
  #drop.over { border-color: #1e88e5; background: #e3f2fd; }
  #controls { display: flex; gap: 16px; align-items: center; margin: 12px 0; flex-wrap: wrap; }
  #status.error { color: #b71c1c; font-weight: 600; }
  #view { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
  canvas { max-width: min(100%, 900px); image-rendering: pixelated; background: #ddd; border: 1px solid #ccc; }
  #legend { list-style: none; padding: 0; margin: 0; min-width: 220px; }
  #legend li { display: flex; gap: 8px; align-items: center; padding: 4px 6px; cursor: pointer; border-radius: 4px; }
  #legend li:hover { background: #eceff1; }
  #legend li[aria-pressed="true"] { background: #cfd8dc; font-weight: 600; }
  #legend .swatch { width: 14px; height: 14px; border: 1px solid #0005; flex: none; }
  #legend .area { margin-left: auto; color: #555; font-variant-numeric: tabular-nums; }
  a.disabled { pointer-events: none; color: #999; }
</style>
</head>
<body data-state="empty">
<header><h1>segwise viewer</h1><span id="model">loading the model description</span></header>
<main>
  <section id="drop">Drop an image here, or <label>choose one: <input type="file" id="file"
    accept=".png,.jpg,.jpeg,.tif,.tiff,image/png,image/jpeg,image/tiff"></label></section>
  <div id="controls">
    <label>overlay opacity <input type="range" id="opacity" min="0" max="100" value="50"></label>
    <output id="opacity-value">50 %</output>
    <button id="show-all" type="button">show all classes</button>
    <a id="download" class="disabled" download="mask.png">download the mask (class-index PNG)</a>
  </div>
  <p id="status" role="status">Pick or drop a PNG, JPEG or TIFF image.</p>
  <div id="view"><canvas id="canvas" width="0" height="0"></canvas><ul id="legend"></ul></div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const state = { model: null, image: null, mask: null, counts: [], only: null, maskUrl: null };

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadModel() {
  const response = await fetch("model");
  state.model = await response.json();
  const m = state.model;
  $("model").textContent = `${m.architecture}${m.encoder ? " / " + m.encoder : ""}: ${m.num_classes} classes, ` +
    `${m.in_channels} band(s), ${m.inference.name}`;
}

async function pixelsOf(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height);
}

async function post(file, output) {
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await fetch(`predict?output=${output}`, { method: "POST", body: form });
  if (!response.ok) {
    const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
    throw new Error(body.error);
  }
  return response.blob();
}

async function displayPixels(file) {
  try {
    return await pixelsOf(file);
  } catch (error) {  // TIFF or many bands: the browser cannot show it, the server renders the display RGB
    return pixelsOf(await post(file, "image"));
  }
}

async function open(file) {
  if (!file) return;
  document.body.dataset.state = "busy";
  setStatus(`predicting ${file.name} ...`);
  try {
    if (!state.model) await loadModel();
    const maskBlob = await post(file, "index");
    const [mask, image] = await Promise.all([pixelsOf(maskBlob), displayPixels(file)]);
    const values = new Uint8Array(mask.width * mask.height);
    for (let i = 0; i < values.length; i++) values[i] = mask.data[4 * i];
    state.image = image;
    state.mask = values;
    state.counts = new Array(state.model.num_classes).fill(0);
    for (const k of values) if (k < state.counts.length) state.counts[k]++;
    state.only = null;
    if (state.maskUrl) URL.revokeObjectURL(state.maskUrl);
    state.maskUrl = URL.createObjectURL(maskBlob);
    $("download").href = state.maskUrl;
    $("download").download = file.name.replace(/\\.[^.]*$/, "") + "_mask.png";
    $("download").classList.remove("disabled");
    $("canvas").width = image.width;
    $("canvas").height = image.height;
    legend();
    draw();
    setStatus(`${file.name}: ${image.width} x ${image.height} pixels`);
    document.body.dataset.state = "ready";
  } catch (error) {
    setStatus(`${file.name}: ${error.message}`, true);
    document.body.dataset.state = "error";
  }
}

function legend() {
  const list = $("legend");
  list.replaceChildren();
  const total = state.mask.length;
  state.model.classes.forEach((name, k) => {
    const item = document.createElement("li");
    item.dataset.class = k;
    item.setAttribute("role", "button");
    item.setAttribute("aria-pressed", String(state.only === k));
    item.title = "show only this class (click again for all)";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${state.model.palette[k].join(",")})`;
    const label = document.createElement("span");
    label.textContent = name;
    const area = document.createElement("span");
    area.className = "area";
    area.textContent = `${(100 * state.counts[k] / total).toFixed(1)} % (${state.counts[k]} px)`;
    item.append(swatch, label, area);
    item.addEventListener("click", () => { state.only = state.only === k ? null : k; legend(); draw(); });
    list.append(item);
  });
}

function draw() {
  if (!state.mask) return;
  const alpha = Number($("opacity").value) / 100;
  $("opacity-value").textContent = `${$("opacity").value} %`;
  const { width, height, data: source } = state.image;
  const palette = state.model.palette;
  const context = $("canvas").getContext("2d");
  const out = context.createImageData(width, height);
  for (let i = 0, p = 0; i < state.mask.length; i++, p += 4) {
    const k = state.mask[i];
    const shown = k < palette.length && (state.only === null || state.only === k);
    for (let c = 0; c < 3; c++) {
      out.data[p + c] = shown ? Math.round(source[p + c] * (1 - alpha) + palette[k][c] * alpha) : source[p + c];
    }
    out.data[p + 3] = 255;
  }
  context.putImageData(out, 0, 0);
}

$("file").addEventListener("change", (event) => open(event.target.files[0]));
$("opacity").addEventListener("input", draw);
$("show-all").addEventListener("click", () => { state.only = null; if (state.mask) { legend(); draw(); } });
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  open(event.dataTransfer.files[0]);
});
loadModel().catch((error) => setStatus(`cannot read the model description: ${error.message}`, true));
</script>
</body>
</html>
"""
