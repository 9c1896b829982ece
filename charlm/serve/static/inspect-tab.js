// The playground's inspect tab: sends the text to /v1/inspect and draws the answer with the
// renderer `charlm inspect`'s pages use (inspect.js). Uses playground.js's `headers()`
// (the API key) and `checked()` (an error object as an Error).
"use strict";

function showTab(name) {
  const inspecting = name === "inspect";
  document.querySelector("main").hidden = inspecting;
  document.getElementById("inspect-panel").hidden = !inspecting;
  document.getElementById("tab-generate").classList.toggle("active", !inspecting);
  document.getElementById("tab-inspect").classList.toggle("active", inspecting);
}

async function inspectText() {
  const button = document.getElementById("inspect-run");
  const error = document.getElementById("inspect-error");
  error.textContent = "";
  button.disabled = true;
  try {
    const response = await fetch("/v1/inspect", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers() },
      body: JSON.stringify({ text: document.getElementById("inspect-text").value }),
    });
    await checked(response);
    CharlmInspect.render(document.getElementById("inspect-view"), await response.json());
  } catch (problem) {
    error.textContent = problem.message;
  } finally {
    button.disabled = false;
  }
}

document.getElementById("tab-generate").addEventListener("click", () => showTab("generate"));
document.getElementById("tab-inspect").addEventListener("click", () => showTab("inspect"));
document.getElementById("inspect-run").addEventListener("click", inspectText);
