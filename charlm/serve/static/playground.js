// The charlm playground: sends the prompt to /v1/completions with stream: true and shows
// the text as the server-sent events arrive; draws the run's validation curve.
// A server started with --api-key needs the key on /v1/: it is asked for on the page and
// kept in the tab's session storage (gone when the tab closes), never in the page's URL.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "charlm-api-key";
let controller = null;

function headers() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function checked(response) {
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(problem.error ? problem.error.message : response.statusText);
  }
  return response;
}

function showSliderValues() {
  for (const id of ["temperature", "top-k", "top-p"]) {
    $(id + "-value").textContent = $(id).value;
  }
}

function requestBody() {
  const body = {
    prompt: $("prompt").value,
    max_tokens: Number($("length").value),
    temperature: Number($("temperature").value),
    top_k: Number($("top-k").value),
    top_p: Number($("top-p").value),
    stream: true,
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  return body;
}

async function generate() {
  $("error").textContent = "";
  $("output").textContent = "";
  const prompt = document.createElement("span");
  prompt.className = "prompt";
  prompt.textContent = $("prompt").value;
  const generated = document.createElement("span");
  generated.id = "generated";
  $("output").append(prompt, generated);
  controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  const started = performance.now();
  let chars = 0;
  try {
    const response = await fetch("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers() },
      body: JSON.stringify(requestBody()),
      signal: controller.signal,
    });
    await checked(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const text = JSON.parse(data).choices.map((c) => c.text).join("");
        generated.textContent += text;
        chars += [...text].length;
        const seconds = (performance.now() - started) / 1000;
        $("speed").textContent = `${chars} chars, ${Math.round(chars / seconds)} chars/s`;
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") $("error").textContent = error.message;
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

function showFacts(run) {
  $("model-name").textContent = run.model;
  $("facts").replaceChildren();
  const rows = [
    ["cell", run.cell], ["layers", run.layers], ["units", run.units],
    ["embedding", run.embedding_dim], ["parameters", run.parameters.toLocaleString()],
    ["vocabulary", run.vocabulary], ["steps", run.steps],
    ["best validation", run.best_val_loss === null ? "–" : run.best_val_loss.toFixed(4)],
  ];
  for (const [name, value] of rows) {
    const term = document.createElement("dt");
    term.textContent = name;
    const detail = document.createElement("dd");
    detail.textContent = value;
    $("facts").append(term, detail);
  }
  $("length").value = run.sample.length;
  $("length").max = run.max_tokens;
  $("temperature").value = run.sample.temperature;
  $("top-k").value = run.sample.top_k;
  $("top-p").value = run.sample.top_p;
  showSliderValues();
  drawCurve(run.history.filter((h) => h.val_loss !== null));
  showTimeline(run.history.filter((h) => h.timeline));
}

// The run learning: its timeline samples, latest first (history.jsonl's "timeline").
function showTimeline(points) {
  const items = points.slice().reverse().map((p) => {
    const item = document.createElement("li");
    const step = document.createElement("strong");
    step.textContent = `step ${p.step}`;
    const text = document.createElement("pre");
    text.textContent = p.timeline;
    item.append(step, text);
    return item;
  });
  if (items.length === 0) {
    const none = document.createElement("li");
    none.textContent = "none: trained with train.timeline_length 0";
    items.push(none);
  }
  $("timeline").replaceChildren(...items);
  $("timeline").dataset.points = String(points.length);
}

function drawCurve(points) {
  const canvas = $("curve");
  const context = canvas.getContext("2d");
  const margin = 36;
  const width = canvas.width - 2 * margin;
  const height = canvas.height - 2 * margin;
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#999";
  context.strokeRect(margin, margin, width, height);
  if (points.length === 0) return;
  const steps = points.map((p) => p.step);
  const losses = points.map((p) => p.val_loss);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  const [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  const x = (step) => margin + (x1 > x0 ? (step - x0) / (x1 - x0) : 0.5) * width;
  const y = (loss) => margin + (y1 > y0 ? (y1 - loss) / (y1 - y0) : 0.5) * height;
  context.fillStyle = "#555";
  context.font = "11px sans-serif";
  context.fillText(y1.toFixed(3), 2, margin + 4);
  context.fillText(y0.toFixed(3), 2, margin + height);
  context.fillText(`step ${x0}`, margin, canvas.height - 8);
  context.fillText(`${x1}`, margin + width - 24, canvas.height - 8);
  context.strokeStyle = "#1565c0";
  context.lineWidth = 2;
  context.beginPath();
  points.forEach((p, i) => (i ? context.lineTo : context.moveTo).call(context, x(p.step), y(p.val_loss)));
  context.stroke();
  for (const p of points) {
    context.fillStyle = "#1565c0";
    context.fillRect(x(p.step) - 2, y(p.val_loss) - 2, 4, 4);
  }
  canvas.dataset.points = String(points.length);
}

for (const id of ["temperature", "top-k", "top-p"]) $(id).addEventListener("input", showSliderValues);
$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => controller && controller.abort());
function loadFacts() {
  $("error").textContent = "";
  fetch("/v1/run", { headers: headers() }).then(checked).then((r) => r.json()).then(showFacts)
    .catch((error) => { $("error").textContent = `run facts: ${error.message}`; });
}

$("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
$("api-key").addEventListener("change", () => {
  sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  loadFacts();
});
loadFacts();
showSliderValues();
