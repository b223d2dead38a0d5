// exprengine's editing page: every edit is made by the server (exprengine's own calls); this
// script only keeps the settings, asks for previews and shows what comes back.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null, session: null, aus: [], face: "all", preset: null,
  unit: [],            // the expression at intensity 1: the intensity slider scales it
  photoStatus: "",     // the header's line about the loaded photo, shown again after other news
  inFlight: false, pending: null, timer: null, shown: 0,
};
const DEBOUNCE_MS = 60;   // while a slider moves; its release asks at once

// --- messages and requests ---------------------------------------------------------------
function showMessage(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

function setStatus(text) { $("status").textContent = text; }

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// The settings changed: what was said of the last download (its command line, summary and the
// header's "downloaded ...") no longer describes them, so it goes.
function settingsChanged() {
  $("command-row").hidden = true;
  $("summary").textContent = "";
  if ($("status").dataset.download) {
    delete $("status").dataset.download;
    setStatus(state.photoStatus);
  }
}

async function api(path, options = {}) {
  let res;
  try {
    res = await fetch(path, options);
  } catch (e) {
    throw new Error("The server did not answer: is `exprengine ui` still running?");
  }
  if (!res.ok) {
    let text = `The server answered ${res.status}.`;
    try { text = (await res.json()).error || text; } catch (e) { /* not JSON */ }
    throw new Error(text);
  }
  return res;
}

const post = (path, body) => api(path, {
  method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
});

function settings() {
  return {
    session: state.session && state.session.session, aus: state.aus, face: state.face,
    age: $("age-on").checked ? Number($("age").value) : null,
  };
}

// --- controls ------------------------------------------------------------------------------
function buildControls(info) {
  state.aus = info.aus.map(() => 0);
  state.unit = info.aus.map(() => 0);
  const sliders = $("sliders");
  for (const region of info.regions) {
    const group = document.createElement("fieldset");
    group.innerHTML = `<legend>${region.name}</legend>`;
    for (const au of region.aus) {
      const i = info.aus.indexOf(au.name);
      const label = document.createElement("label");
      label.className = "slider";
      label.title = `${au.name}: ${au.action}`;
      label.innerHTML = `<span class="au"><b>${au.name}</b> ${au.action}</span>` +
        `<input type="range" id="${au.name}" min="0" max="${info.cap}" step="${info.step}" value="0">` +
        `<output id="${au.name}-value">0.00</output>`;
      const input = label.querySelector("input");
      input.addEventListener("input", () => { setAU(i, input.value); expressionSet(); schedule(); });
      input.addEventListener("change", () => { setAU(i, input.value); released(); });
      group.appendChild(label);
    }
    sliders.appendChild(group);
  }
  const presets = $("presets");
  for (const name of Object.keys(info.presets)) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = name;
    b.dataset.preset = name;
    b.title = info.presets[name].length ? info.presets[name].join(" + ") : "every AU at 0";
    b.addEventListener("click", () => { applyPreset(name); released(); });
    presets.appendChild(b);
    $("morph-to").add(new Option(name, name));
  }
  $("morph-to").value = "happiness";
  for (const s of info.schedules) $("morph-schedule").add(new Option(s, s));
  $("morph-schedule").value = "ease-in-out";
  $("intensity").max = info.cap;
  for (const id of ["morph-frames", "traverse-frames"]) {
    $(id).min = info.min_frames;
    $(id).max = info.max_frames;
  }
  $("age-controls").hidden = !info.age;
  $("age-note").hidden = !info.age_note;
  $("age-note").textContent = info.age_note;
}

function setAU(i, value) {
  state.aus[i] = Number(value);
  $(`${state.info.aus[i]}-value`).textContent = Number(value).toFixed(2);
}

function applyPreset(name) {
  const raised = state.info.presets[name];
  state.unit = state.info.aus.map((au) => (raised.includes(au) ? 1 : 0));
  state.preset = name;
  markPreset();
  scaleExpression();
}

// The AUs of the expression at the intensity slider's value: a preset's AUs at that intensity, or
// the AUs as the user set them, scaled by intensity / the intensity they were set at (capped).
// -> whether any AU changed.
function scaleExpression() {
  const intensity = Number($("intensity").value);
  let changed = false;
  state.info.aus.forEach((au, i) => {
    const v = Math.min(state.info.cap, Math.round(100 * state.unit[i] * intensity) / 100);
    changed = changed || v !== state.aus[i];
    $(au).value = v;
    setAU(i, v);
  });
  return changed;
}

// An AU slider moved: the expression is the user's own now, and the intensity scales it from here
// (at intensity 0 there is nothing to scale from, so the intensity becomes 1).
function expressionSet() {
  state.preset = null;
  markPreset();
  if (Number($("intensity").value) === 0) {
    $("intensity").value = 1;
    $("intensity-value").textContent = "1.00";
  }
  const intensity = Number($("intensity").value);
  state.unit = state.aus.map((v) => v / intensity);
}

function markPreset() {
  for (const b of $("presets").children) b.classList.toggle("active", b.dataset.preset === state.preset);
}

// --- previews ------------------------------------------------------------------------------
function schedule() {
  settingsChanged();
  clearTimeout(state.timer);
  state.timer = setTimeout(() => requestPreview(null), DEBOUNCE_MS);
}

function released() {
  settingsChanged();
  clearTimeout(state.timer);
  requestPreview(performance.now());
}

async function requestPreview(mark) {
  if (!state.session) return checkWarnings();
  if (state.inFlight) {     // one request at a time; the latest settings go next
    state.pending = {mark: mark !== null ? mark : (state.pending ? state.pending.mark : null)};
    return;
  }
  state.inFlight = true;
  try {
    const sent = performance.now();
    const res = await post("/api/preview", settings());
    const answered = performance.now();
    showWarnings(JSON.parse(res.headers.get("X-Warnings") || "[]"));
    const serverMs = res.headers.get("X-Server-Ms");
    const blob = await res.blob();
    const received = performance.now();
    await showImage(blob);
    const decoded = performance.now();
    const shown = await new Promise((resolve) => requestAnimationFrame(() => resolve(performance.now())));
    state.shown += 1;
    document.body.dataset.previews = String(state.shown);
    $("server-ms").textContent = serverMs;
    if (mark !== null) {
      const ms = shown - mark;
      $("latency").textContent = ms.toFixed(0);
      document.body.dataset.latency = ms.toFixed(1);
      // where the time went, for the benchmark (bench/test_ui_bench.py)
      document.body.dataset.timings = JSON.stringify({
        waited: sent - mark, server: Number(serverMs), request: answered - sent, body: received - answered,
        decode: decoded - received, paint: shown - decoded, total: ms,
      });
    }
    showMessage("");
  } catch (e) {
    showMessage(e.message);
  } finally {
    state.inFlight = false;
  }
  if (state.pending) {
    const next = state.pending;
    state.pending = null;
    requestPreview(next.mark);
  }
}

async function showImage(blob) {
  const img = $("preview");
  const old = img.src;
  img.src = URL.createObjectURL(blob);
  await img.decode();
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  fitImage();
  const s = state.session;
  $("preview-size").textContent = img.naturalWidth === s.width ? `${s.width}x${s.height}, full size`
    : `${img.naturalWidth}x${img.naturalHeight} of ${s.width}x${s.height}`;
}

function fitImage() {     // the photo as large as the stage allows, scaled up or down, boxes with it
  const img = $("preview");
  if (!state.session || !img.naturalWidth) return;
  const room = $("stage").clientWidth - 24;
  const scale = Math.min(room / img.naturalWidth, (0.78 * window.innerHeight) / img.naturalHeight);
  img.style.width = `${Math.floor(img.naturalWidth * scale)}px`;
}

async function checkWarnings() {
  try {
    showWarnings((await (await post("/api/warnings", {aus: state.aus})).json()).warnings);
  } catch (e) {
    showMessage(e.message);
  }
}

function showWarnings(list) {
  const ul = $("warnings");
  ul.replaceChildren();
  for (const text of list.length ? list : ["none"]) {
    const li = document.createElement("li");
    li.textContent = text;
    if (!list.length) li.className = "none";
    ul.appendChild(li);
  }
  $("warnings-panel").classList.toggle("warn", list.length > 0);
}

// --- photos --------------------------------------------------------------------------------
async function loadFile(file) {
  showMessage("");
  delete $("status").dataset.download;
  setStatus(`reading ${file.name} and finding its faces ...`);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const session = await (await api("/api/photo", {method: "POST", body: form})).json();
    state.session = session;
    state.face = "all";
    state.photoStatus = `${session.name}: ${session.width}x${session.height}, ` +
      `${plural(session.faces.length, "face")} found`;
    setStatus(state.photoStatus);
    drawFaces();
    for (const id of ["frame", "faces", "timing", "download-row"]) $(id).hidden = false;
    $("empty").hidden = true;
    $("command-row").hidden = true;
    $("summary").textContent = "";
    $("morph-out").hidden = true;
    $("traverse-out").hidden = true;
    await requestPreview(performance.now());
  } catch (e) {
    setStatus(state.photoStatus);      // the photo loaded before, if any, is still the one edited
    showMessage(e.message);
  }
}

function drawFaces() {
  const s = state.session;
  const buttons = $("face-buttons");
  const boxes = $("boxes");
  buttons.replaceChildren();
  boxes.replaceChildren();
  const all = document.createElement("button");
  all.type = "button";
  all.textContent = "all faces";
  all.dataset.face = "all";
  all.addEventListener("click", () => chooseFace("all"));
  buttons.appendChild(all);
  for (const f of s.faces) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = `#${f.index}`;
    b.dataset.face = String(f.index);
    b.disabled = !f.editable;
    b.title = f.editable ? `${f.width}x${f.height} at (${f.left},${f.top})` : "no face mesh found: cannot be edited";
    b.addEventListener("click", () => chooseFace(f.index));
    buttons.appendChild(b);
    const box = document.createElement("div");
    box.className = "box" + (f.editable ? "" : " unusable");
    box.dataset.face = String(f.index);
    Object.assign(box.style, {
      left: `${100 * f.left / s.width}%`, top: `${100 * f.top / s.height}%`,
      width: `${100 * f.width / s.width}%`, height: `${100 * f.height / s.height}%`,
    });
    box.innerHTML = `<span>#${f.index}</span>`;
    if (f.editable) box.addEventListener("click", () => chooseFace(state.face === f.index ? "all" : f.index));
    boxes.appendChild(box);
  }
  markFaces();
}

function chooseFace(face) {
  state.face = face;
  markFaces();
  released();
}

function markFaces() {
  for (const el of document.querySelectorAll("[data-face]")) {
    const f = el.dataset.face;
    el.classList.toggle("chosen", state.face === "all" ? true : f === String(state.face));
  }
  $("face-buttons").firstChild.classList.toggle("chosen", state.face === "all");
}

// --- camera ----------------------------------------------------------------------------------
async function startCamera() {
  showMessage("");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showMessage("This browser does not give this page a camera (it needs http://127.0.0.1 or https).");
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 1280}}});
    const video = $("camera");
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    $("camera-shot").hidden = false;
    setStatus("camera on: take a still to edit it");
  } catch (e) {
    showMessage(`The camera could not be opened (${e.name}: ${e.message}).`);
  }
}

async function takeStill() {
  const video = $("camera");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  for (const track of video.srcObject.getTracks()) track.stop();
  video.srcObject = null;
  video.hidden = true;
  $("camera-shot").hidden = true;
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  await loadFile(new File([blob], "camera.png", {type: "image/png"}));
}

// --- downloads, morphs, ages ---------------------------------------------------------------
// The file name of a Content-Disposition header: RFC 5987's filename* (UTF-8) when there is one.
function fileName(disposition) {
  const utf8 = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
  return utf8 ? decodeURIComponent(utf8[1]) : /filename="([^"]*)"/.exec(disposition)[1];
}

function save(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

async function download() {
  if (!state.session) return;
  const button = $("download");
  button.disabled = true;
  setStatus("writing the full-resolution photo ...");
  try {
    const res = await post("/api/download", {...settings(), format: $("format").value});
    const name = fileName(res.headers.get("Content-Disposition"));
    $("summary").textContent = JSON.parse(res.headers.get("X-Summary"));
    $("command").textContent = JSON.parse(res.headers.get("X-Command"));
    $("command-row").hidden = false;
    save(await res.blob(), name);
    setStatus(`downloaded ${name}`);
    $("status").dataset.download = "1";
    showMessage("");
  } catch (e) {
    showMessage(e.message);
    setStatus(state.photoStatus);
  } finally {
    button.disabled = false;
  }
}

async function animation(kind, path, body) {
  if (!state.session) return;
  const button = $(kind === "morph" ? "morph" : "traverse");
  button.disabled = true;
  setStatus(kind === "morph" ? "rendering the morph ..." : "rendering the lifespan ...");
  const start = performance.now();
  try {
    const made = await (await post(path, {session: state.session.session, face: state.face, ...body})).json();
    const base = `/api/animation/${state.session.session}/${made.id}`;
    const prefix = kind === "morph" ? "morph" : "traverse";
    $(`${prefix}-img`).src = `${base}.gif`;
    $(`${prefix}-gif`).href = `${base}.gif`;
    $(`${prefix}-mp4`).href = `${base}.mp4`;
    await $(`${prefix}-img`).decode();
    $(`${prefix}-face`).textContent = made.face === null ? "" : state.session.faces.length === 1
      ? "" : state.face === "all"
      ? `Face #${made.face}: with all faces chosen, the ${kind === "morph" ? "most confident" : "largest"} ` +
        "one (choose a face to render another)."
      : `Face #${made.face}.`;
    $(`${prefix}-out`).hidden = false;
    setStatus(`${kind}: ${plural(made.frames, "frame")} in ${((performance.now() - start) / 1000).toFixed(1)} s`);
    showMessage("");
  } catch (e) {
    $(`${kind === "morph" ? "morph" : "traverse"}-out`).hidden = true;     // not the previous one's picture
    showMessage(e.message);
    setStatus(state.photoStatus);
  } finally {
    button.disabled = false;
  }
}

// --- start -----------------------------------------------------------------------------------
async function main() {
  try {
    state.info = await (await api("/api/info")).json();
  } catch (e) {
    showMessage(e.message);
    return;
  }
  buildControls(state.info);
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    $("file").value = "";                 // choosing the same file again loads it again
    if (file) loadFile(file);
  });
  $("camera-start").addEventListener("click", startCamera);
  $("camera-shot").addEventListener("click", takeStill);
  // the intensity asks for a preview only when it changed an AU (not while every AU is at 0)
  let scaled = false;
  $("intensity").addEventListener("input", () => {
    $("intensity-value").textContent = Number($("intensity").value).toFixed(2);
    if (scaleExpression()) { scaled = true; schedule(); }
  });
  $("intensity").addEventListener("change", () => {
    if (scaleExpression() || scaled) released();
    scaled = false;
  });
  $("reset").addEventListener("click", () => { applyPreset("natural"); state.preset = null; markPreset(); released(); });
  $("format").addEventListener("change", settingsChanged);
  $("download").addEventListener("click", download);
  // an empty (or unreadable) number field is sent as null: the server says it is empty
  const frames = (id) => ($(id).value === "" ? null : Number($(id).value));
  $("morph").addEventListener("click", () => animation("morph", "/api/morph", {
    aus: state.aus, preset: $("morph-to").value, intensity: Number($("intensity").value),
    frames: frames("morph-frames"), schedule: $("morph-schedule").value,
  }));
  $("traverse").addEventListener("click", () => animation("lifespan", "/api/traverse", {
    frames: frames("traverse-frames"),
  }));
  $("age-on").addEventListener("change", () => { $("age").disabled = !$("age-on").checked; released(); });
  $("age").addEventListener("input", () => { $("age-value").textContent = $("age").value; });
  $("age").addEventListener("change", released);
  window.addEventListener("resize", fitImage);
  document.body.dataset.ready = "1";
}

main();
