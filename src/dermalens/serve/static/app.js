// dermalens web page: pick or photograph an image, call the API, show the result, send feedback.
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);
// Every sentence comes from the server in the page's language (routes/page.py
// browser_strings), and numbers and dates are written for that language with Intl.
const T = JSON.parse(document.getElementById("strings").textContent);
const LANG = document.documentElement.lang || "en";
const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";
const TRIAGE = {
  benign: T.triage_benign,
  malignant: T.triage_malignant,
  uncertain: T.triage_uncertain,
  not_skin: T.triage_not_skin,
};

// "%(name)s" placeholders, as in the gettext catalogues
function fmt(template, values = {}) {
  return template.replace(/%\((\w+)\)s/g, (_, key) => String(values[key] ?? ""));
}

function number(value, digits) {
  return new Intl.NumberFormat(LANG, { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(value);
}
// "unavailable": the model has classes of unknown malignancy, so it gives no triage and the
// page shows no badge, only #no-triage's sentence saying why

let chosen = null; // the File to analyse
let previewUrl = null;
let predictionId = null;

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function choose(file) {
  if (!file) return;
  chosen = file;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  const preview = $("preview");
  preview.src = previewUrl;
  preview.alt = fmt(T.selected_image, { name: file.name });
  preview.hidden = false;
  $("drop-empty").hidden = true;
  const size = file.size < 1e6
    ? fmt(T.kilobytes, { size: number(Math.ceil(file.size / 1e3), 0) })
    : fmt(T.megabytes, { size: number(file.size / 1e6, 1) });
  $("file-name").textContent = `${file.name} (${size})`;
  $("submit").disabled = false;
  showError("");
}

// the same rule as serve/i18n.py percent(): whole numbers at the ends, else one decimal
function percent(p) {
  const digits = p >= 0.995 || p < 0.001 ? 0 : 1;
  return new Intl.NumberFormat(LANG, {
    style: "percent", minimumFractionDigits: digits, maximumFractionDigits: digits,
  }).format(p);
}

// as serve/i18n.py when(): the CLDR "yMMMd" date, then the short time
function when(iso) {
  const moment = new Date(iso);
  const day = new Intl.DateTimeFormat(LANG, { year: "numeric", month: "short", day: "numeric" });
  const time = new Intl.DateTimeFormat(LANG, { timeStyle: "short" });
  return `${day.format(moment)} ${time.format(moment)}`;
}

function renderTop(top) {
  const list = $("top");
  list.replaceChildren();
  for (const c of top) {
    const item = document.createElement("li");
    const label = document.createElement("div");
    label.className = "bar-label";
    const name = document.createElement("span");
    name.textContent = c.name;
    const code = document.createElement("span");
    code.className = "code";
    code.textContent = c.code;
    name.append(code);
    if (c.malignant || c.malignant === null) {
      const tag = document.createElement("span");
      tag.className = c.malignant ? "tag" : "tag unknown";
      tag.textContent = c.malignant ? T.malignant_class : T.malignancy_unknown;
      name.append(tag);
    }
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(c.probability);
    label.append(name, value);
    const bar = document.createElement("div");
    bar.className = c.malignant ? "bar malignant" : "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", (100 * c.probability).toFixed(1));
    bar.setAttribute("aria-label", fmt(T.confidence_of, { name: c.name }));
    const fill = document.createElement("span");
    bar.append(fill);
    item.append(label, bar);
    list.append(item);
    requestAnimationFrame(() => { fill.style.width = `${(100 * c.probability).toFixed(1)}%`; });
  }
}

// The colour scale of the PNG overlay (runtime/explain.colour_map): blue, cyan, yellow, red.
function heatColour(h) {
  const level = (x) => Math.min(1, Math.max(0, 1.5 - Math.abs(4 * h - x)));
  return [level(3), level(2), level(1)];
}

// Draws heatmap.grid (rows x columns, in [0, 1], over the model's crop) as the server's PNG
// overlay would: bilinear upsampling (half-pixel centres, edges clamped), heatColour, and
// opacity 0.45 h over the photo underneath. The server sends 35 numbers instead of a PNG.
function drawHeatmap(canvas, heatmap) {
  const [rows, cols] = heatmap.shape;
  const [aw, ah] = $("viewer").dataset.aspect.split("/").map(Number);
  canvas.width = Math.max(64, Math.round(canvas.clientWidth * (window.devicePixelRatio || 1)) || 480);
  canvas.height = Math.max(8, Math.round((canvas.width * ah) / aw));
  const { width, height } = canvas;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(width, height);
  const axis = (i, size, cells) => {
    const at = Math.min(cells - 1, Math.max(0, ((i + 0.5) * cells) / size - 0.5));
    const low = Math.floor(at);
    return [low, Math.min(cells - 1, low + 1), at - low];
  };
  const xs = Array.from({ length: width }, (_, x) => axis(x, width, cols));
  for (let y = 0; y < height; y++) {
    const [r0, r1, fy] = axis(y, height, rows);
    const top = heatmap.grid[r0], bottom = heatmap.grid[r1];
    for (let x = 0; x < width; x++) {
      const [c0, c1, fx] = xs[x];
      const upper = top[c0] + (top[c1] - top[c0]) * fx;
      const h = upper + (bottom[c0] + (bottom[c1] - bottom[c0]) * fx - upper) * fy;
      const [r, g, b] = heatColour(h);
      const k = 4 * (y * width + x);
      pixels.data[k] = 255 * r;
      pixels.data[k + 1] = 255 * g;
      pixels.data[k + 2] = 255 * b;
      pixels.data[k + 3] = 255 * 0.45 * h;
    }
  }
  context.putImageData(pixels, 0, 0);
}

// the shift warning: this image, and the service's latest requests taken together
function renderShift(shift, recent) {
  const image = Boolean(shift && shift.flagged);
  const group = Boolean(recent && recent.shifted);
  $("shift-image").hidden = !image;
  $("shift-measures").textContent = image ? shift.measures.join(", ") : "";
  $("shift-recent").hidden = !group;
  $("shift").hidden = !(image || group);
}

// The scope gate's answer: which model answered, or (no classes) why none did, in plain
// words from T; the technical rule only behind "Details".
function renderScope(result) {
  const scope = result.scope;
  const out = !result.top.length;
  $("answer").hidden = out;
  $("feedback-form").hidden = out;
  $("scope-out").hidden = !out;
  $("answered-by").hidden = out || !scope || scope.reason !== "answered";
  $("scope-details").hidden = !scope;
  if (!scope) return out;
  $("scope-rule").textContent = scope.rule;
  if (!out) {
    $("answered-by").textContent = T[`answered_${scope.kind}`] || "";
    return out;
  }
  let sentence = T.scope_other_skin;
  if (scope.reason === "not_skin") sentence = T.scope_not_skin;
  else if (scope.reason === "no_model") sentence = T[`scope_no_model_${scope.kind}`];
  else if (scope.reason === "not_made_for") sentence = T.scope_not_made_for;
  $("scope-sentence").textContent = sentence;
  const kinds = ["dermoscopic", "clinical"].filter((k) => scope.covers.includes(COVERS[k]));
  $("scope-covers").textContent = fmt(T.scope_covers, {
    covers: kinds.map((k) => T[`covers_${k}`]).join("; "),
  });
  $("scope-covers").hidden = !kinds.length;
  return out;
}

// scope.covers as the API words them (runtime.scope.COVERS), to find their translations
const COVERS = {
  dermoscopic: "dermoscopic close-ups of skin lesions",
  clinical: "camera or phone close-ups of skin lesions",
};

function render(result) {
  predictionId = result.id;
  const out = renderScope(result);
  const badge = $("triage");
  const noTriage = result.triage.result === "unavailable";
  badge.hidden = noTriage || out;
  badge.dataset.triage = result.triage.result;
  badge.textContent = noTriage ? "" : TRIAGE[result.triage.result] || result.triage.result;
  badge.title = result.triage.rule;
  $("no-triage").hidden = !noTriage;
  $("no-triage-rule").textContent = noTriage ? result.triage.rule : "";
  $("triage-detail").hidden = noTriage; // a sum missing the unknown classes would mislead
  const note = $("uncertain");
  note.hidden = !result.uncertain || out;
  const reason = result.not_skin_reason ? fmt(T.not_skin_reason, { reason: result.not_skin_reason }) : "";
  note.textContent = result.not_skin
    ? `${fmt(T.not_skin, { reason })} ${T.not_skin_advice}`
    : T.low_confidence;
  renderShift(result.shift, result.shift_recent);
  $("malignant-p").textContent = out ? "" : percent(result.triage.malignant_probability);
  $("triage-rule").textContent = result.triage.rule;
  renderTop(result.top);
  $("viewer-photo").src = previewUrl;
  const heatmap = $("heatmap");
  const hasMap = Boolean(result.heatmap);
  heatmap.hidden = !hasMap;
  $("result-model").textContent = result.model.name;
  $("result-version").textContent = result.model.version;
  $("timing").textContent = fmt(T.milliseconds, { ms: number(Math.round(result.timings_ms.total || 0), 0) });
  const time = $("result-time");
  time.dateTime = result.created_at;
  time.textContent = when(result.created_at);
  $("feedback-form").reset();
  const correct = $("correct-label");
  if (!out && [...correct.options].some((o) => o.value === result.top[0].code)) {
    correct.value = result.top[0].code;
  }
  correct.disabled = true;
  $("feedback-status").textContent = "";
  $("feedback-submit").disabled = false;
  $("result-empty").hidden = true;
  $("result").hidden = false;
  if (hasMap && !out) drawHeatmap(heatmap, result.heatmap); // once shown, so it has its real width
}

async function analyse(event) {
  event.preventDefault();
  if (!chosen) return;
  const form = new FormData();
  form.append("file", chosen, chosen.name || "image");
  for (const field of ["age", "sex", "site"]) {
    const value = $(field).value.trim();
    if (value) form.append(field, value);
  }
  form.append("consent", $("consent").checked ? "true" : "false");
  const button = $("submit");
  button.disabled = true;
  button.textContent = T.analysing;
  $("result-card").setAttribute("aria-busy", "true");
  showError("");
  try {
    // overlay=false: the small CAM grid only, coloured here (drawHeatmap), not a PNG
    const response = await fetch(`${API}/predictions?explain=true&overlay=false`, {
      method: "POST",
      // errors and class names in the page's language; the CSRF token for a signed-in session
      headers: { "Accept-Language": LANG, "X-CSRF-Token": CSRF },
      body: form,
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || fmt(T.server_answered, { status: response.status }));
    render(body);
    $("result-title").focus({ preventScroll: true });
    if (window.matchMedia("(max-width: 879px)").matches) $("result-card").scrollIntoView();
  } catch (error) {
    showError(fmt(T.analyse_failed, { error: error.message }));
  } finally {
    button.disabled = false;
    button.textContent = T.analyse;
    $("result-card").setAttribute("aria-busy", "false");
  }
}

async function sendFeedback(event) {
  event.preventDefault();
  if (!predictionId) return;
  const agree = document.querySelector('input[name="verdict"]:checked').value === "agree";
  const body = { agree, note: $("note").value.trim() || null };
  if (!agree) body.correct_label = $("correct-label").value;
  const status = $("feedback-status");
  status.classList.remove("failed");
  status.textContent = T.sending;
  try {
    const response = await fetch(`${API}/predictions/${predictionId}/feedback`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept-Language": LANG, "X-CSRF-Token": CSRF },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.detail || fmt(T.server_answered, { status: response.status }));
    status.textContent = T.feedback_saved;
    $("feedback-submit").disabled = true;
  } catch (error) {
    status.classList.add("failed");
    status.textContent = fmt(T.feedback_failed, { error: error.message });
  }
}

function setUp() {
  const viewer = $("viewer");
  const frame = $("frame");
  frame.style.aspectRatio = viewer.dataset.aspect;
  if (viewer.dataset.fit === "fill") frame.classList.add("fill");
  $("result-title").tabIndex = -1;

  $("file").addEventListener("change", (e) => choose(e.target.files[0]));
  $("camera").addEventListener("change", (e) => choose(e.target.files[0]));
  const zone = $("dropzone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragover"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragover");
    choose(e.dataTransfer.files[0]);
  });
  $("predict-form").addEventListener("submit", analyse);
  $("feedback-form").addEventListener("submit", sendFeedback);
  $("heatmap-toggle").addEventListener("change", (e) => {
    viewer.classList.toggle("no-heatmap", !e.target.checked);
  });
  for (const radio of document.querySelectorAll('input[name="verdict"]')) {
    radio.addEventListener("change", () => {
      $("correct-label").disabled = radio.value === "agree" && radio.checked;
    });
  }
}

document.addEventListener("DOMContentLoaded", setUp);
