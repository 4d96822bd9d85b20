// The orientation demo page: sends the chosen file as the body of POST /classify and draws
// one confidence bar per class. Plain script, no dependencies, works offline.
"use strict";

const API = "/classify";
const $ = (id) => document.getElementById(id);
const limits = { maxBytes: 0 }; // learnt from GET /classify; 0 = let the server decide

function size(n) {
  return n < 1024 * 1024 ? `${Math.ceil(n / 1024)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function describe(label) {
  const deg = Number(label);
  if (!Number.isFinite(deg)) return label;
  return deg === 0 ? "0° · upright" : `${deg}° clockwise`;
}

function showMessage(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.classList.toggle("error", Boolean(isError));
  box.hidden = false;
}

function hideMessage() {
  $("message").hidden = true;
}

function renderBars(labels) {
  const list = $("bars");
  list.replaceChildren();
  labels.forEach((entry, i) => {
    const pct = Math.round(entry.score * 1000) / 10;
    const item = document.createElement("li");
    item.className = i === 0 ? "bar top" : "bar";
    item.dataset.label = entry.label;
    item.dataset.score = String(entry.score);

    const name = document.createElement("span");
    name.className = "bar-name";
    name.textContent = describe(entry.label);

    const track = document.createElement("span");
    track.className = "bar-track";
    track.setAttribute("role", "meter");
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "100");
    track.setAttribute("aria-valuenow", String(pct));
    track.setAttribute("aria-label", describe(entry.label));
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    track.append(fill);

    const score = document.createElement("span");
    score.className = "bar-score";
    score.textContent = `${pct.toFixed(1)}%`;

    item.append(name, track, score);
    list.append(item);
    requestAnimationFrame(() => { fill.style.width = `${pct}%`; });
  });
}

// The shortest turn that makes a picture turned `deg` clockwise upright again.
function fixHint(deg) {
  if (!Number.isFinite(deg)) return "";
  if (deg === 0) return "Nothing to fix.";
  if (deg === 180) return "Turn it upside down to read it.";
  return deg < 180
    ? `Rotate it ${deg}° counter-clockwise to make it upright.`
    : `Rotate it ${360 - deg}° clockwise to make it upright.`;
}

function renderAnswer(answer) {
  const top = answer.labels[0];
  const deg = Number(top.label);
  $("verdict").textContent = deg === 0 ? "Upright" : Number.isFinite(deg) ? `Turned ${deg}° clockwise` : top.label;
  $("advice").textContent = fixHint(deg);
  renderBars(answer.labels);
  const img = answer.image;
  $("image-info").textContent = `${img.format.toUpperCase()} · ${img.width}×${img.height}`;
  const t = answer.elapsed;
  $("timing").textContent =
    `${answer.model}: decode ${t.decode_ms.toFixed(1)} ms · resize ${t.preprocess_ms.toFixed(1)} ms · ` +
    `inference ${t.inference_ms.toFixed(1)} ms (inside the worker)`;
  $("model-name").textContent = answer.model;
  $("result").hidden = false;
}

async function errorText(res) {
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    // Worker and server errors alike: {"error": kind, "message": sentence}.
    if (body && typeof body.message === "string") return body.message;
    if (body && typeof body.error === "string") return body.error;
  } catch (_) { /* not JSON: fall through */ }
  if (res.status === 413) return "The file is too large for the server.";
  return text.trim() || `The server answered ${res.status} ${res.statusText}.`;
}

async function classify(file) {
  $("result").hidden = true;
  if (!file) return;
  if (limits.maxBytes && file.size > limits.maxBytes) {
    showMessage(`Too large: ${file.name} is ${size(file.size)}; the limit is ${size(limits.maxBytes)}.`, true);
    return;
  }
  if (file.size === 0) {
    showMessage(`${file.name} is empty: choose a JPEG or PNG picture.`, true);
    return;
  }
  showMessage(`Looking at ${file.name}…`, false);
  let res;
  try {
    res = await fetch(API, {
      method: "POST",
      headers: { "content-type": file.type || "application/octet-stream" },
      body: file,
    });
  } catch (err) {
    showMessage(`Could not reach the server: ${err.message}`, true);
    return;
  }
  if (!res.ok) {
    const why = await errorText(res);
    const prefix = res.status === 415 ? "Not an image: " : res.status === 413 ? "Too large: " : "";
    showMessage(prefix + why, true);
    return;
  }
  const answer = await res.json();
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  hideMessage();
  renderAnswer(answer);
}

async function loadInfo() {
  try {
    const res = await fetch(API);
    if (!res.ok) return;
    const info = await res.json();
    limits.maxBytes = info.max_bytes || 0;
    $("model-name").textContent = info.model;
    if (limits.maxBytes) $("limit").textContent = ` · up to ${size(limits.maxBytes)}`;
  } catch (_) {
    // The page still works; the server enforces the limit.
  }
}

function setup() {
  const input = $("file");
  const drop = $("drop");
  input.addEventListener("change", () => {
    const file = input.files[0];
    input.value = ""; // choosing the same file again must upload it again
    classify(file);
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    classify(e.dataTransfer.files[0]);
  });
  loadInfo().finally(() => { document.body.dataset.ready = "true"; });
}

document.addEventListener("DOMContentLoaded", setup);
