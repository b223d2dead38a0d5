// exprengine's editing page: every edit is made by the server (exprengine's own calls); this
// script only keeps the settings, asks for previews and shows what comes back.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null, session: null, aus: [], face: "all", preset: null,
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
      input.addEventListener("input", () => { setAU(i, input.value); state.preset = null; markPreset(); schedule(); });
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
  $("morph-frames").max = info.max_frames;
  $("traverse-frames").max = info.max_frames;
  if (info.age) {
    $("age-controls").hidden = false;
  } else {
    $("age-note").hidden = false;
    $("age-note").textContent = "No age engine is loaded, so the age controls are hidden" +
      (info.age_note ? ` (${info.age_note}).` : ".") + " Start the page with --engine-age DIR to age faces.";
  }
}

function setAU(i, value) {
  state.aus[i] = Number(value);
  $(`${state.info.aus[i]}-value`).textContent = Number(value).toFixed(2);
}

function applyPreset(name) {
  const intensity = Number($("intensity").value);
  const raised = state.info.presets[name];
  state.info.aus.forEach((au, i) => {
    const v = raised.includes(au) ? intensity : 0;
    $(au).value = v;
    setAU(i, v);
  });
  state.preset = name;
  markPreset();
}

function markPreset() {
  for (const b of $("presets").children) b.classList.toggle("active", b.dataset.preset === state.preset);
}

// --- previews ------------------------------------------------------------------------------
function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(() => requestPreview(null), DEBOUNCE_MS);
}

function released() {
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
  setStatus(`reading ${file.name} and finding its faces ...`);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const session = await (await api("/api/photo", {method: "POST", body: form})).json();
    state.session = session;
    state.face = "all";
    setStatus(`${session.name}: ${session.width}x${session.height}, ${session.faces.length} face(s) found`);
    drawFaces();
    for (const id of ["frame", "faces", "timing", "download-row"]) $(id).hidden = false;
    $("empty").hidden = true;
    $("command-row").hidden = true;
    $("summary").textContent = "";
    $("morph-out").hidden = true;
    $("traverse-out").hidden = true;
    await requestPreview(performance.now());
  } catch (e) {
    setStatus("");
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
    const name = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition"))[1];
    $("summary").textContent = JSON.parse(res.headers.get("X-Summary"));
    $("command").textContent = JSON.parse(res.headers.get("X-Command"));
    $("command-row").hidden = false;
    save(await res.blob(), name);
    setStatus(`downloaded ${name}`);
  } catch (e) {
    showMessage(e.message);
    setStatus("");
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
    $(`${prefix}-out`).hidden = false;
    setStatus(`${kind}: ${made.frames} frames in ${((performance.now() - start) / 1000).toFixed(1)} s`);
  } catch (e) {
    showMessage(e.message);
    setStatus("");
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
  $("file").addEventListener("change", () => { if ($("file").files[0]) loadFile($("file").files[0]); });
  $("camera-start").addEventListener("click", startCamera);
  $("camera-shot").addEventListener("click", takeStill);
  $("intensity").addEventListener("input", () => {
    $("intensity-value").textContent = Number($("intensity").value).toFixed(2);
    if (state.preset) { applyPreset(state.preset); schedule(); }
  });
  $("intensity").addEventListener("change", () => { if (state.preset) { applyPreset(state.preset); released(); } });
  $("reset").addEventListener("click", () => { applyPreset("natural"); state.preset = null; markPreset(); released(); });
  $("download").addEventListener("click", download);
  $("morph").addEventListener("click", () => animation("morph", "/api/morph", {
    aus: state.aus, preset: $("morph-to").value, intensity: Number($("intensity").value),
    frames: Number($("morph-frames").value), schedule: $("morph-schedule").value,
  }));
  $("traverse").addEventListener("click", () => animation("lifespan", "/api/traverse", {
    frames: Number($("traverse-frames").value),
  }));
  $("age-on").addEventListener("change", () => { $("age").disabled = !$("age-on").checked; released(); });
  $("age").addEventListener("input", () => { $("age-value").textContent = $("age").value; });
  $("age").addEventListener("change", released);
  window.addEventListener("resize", fitImage);
  document.body.dataset.ready = "1";
}

main();
