// The inspection view: a text with each character coloured by the model's surprise, or by
// one unit's value (a layer's hidden state or one of its gates), the most likely characters
// at each position on hover, and the units find_units found as shortcuts. It draws what
// charlm.inspect.page.inspection returns: inlined into `charlm inspect`'s page, and
// fetched from /v1/inspect by the playground's inspect tab.
"use strict";

const CharlmInspect = (() => {
  const SURPRISE_BITS = 8; // surprise at or above this many bits is coloured fully
  const FOUND_SHOWN = 3; // units shown per property
  const WEAK = 0.3; // a correlation below this is shown faded: little to go by

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // One unit's values over the text: bytes (base64) spread over the unit's [low, high].
  function unitValues(layer, quantity, index) {
    const held = layer.held.indexOf(index);
    const [low, high] = layer.ranges[quantity][held];
    const bytes = atob(layer.values[quantity][held]);
    const values = new Float32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) {
      values[i] = low + (bytes.charCodeAt(i) / 255) * (high - low);
    }
    return { values, low, high };
  }

  function surpriseColour(bits) {
    const t = Math.min(bits / SURPRISE_BITS, 1);
    return `rgba(230, 81, 0, ${t.toFixed(3)})`;
  }

  // Signed values (hidden, candidate, cell): blue below zero, red above; gates (0..1):
  // green, by how open they are.
  function valueColour(value, signed, scale) {
    if (!signed) return `rgba(46, 125, 50, ${Math.min(Math.max(value, 0), 1).toFixed(3)})`;
    const t = Math.min(Math.abs(value) / scale, 1).toFixed(3);
    return value < 0 ? `rgba(21, 101, 192, ${t})` : `rgba(198, 40, 40, ${t})`;
  }

  function render(container, data) {
    const chars = Array.from(data.text);
    container.replaceChildren();
    container.classList.add("charlm-inspect");

    const summary = element("p", "ci-summary");
    summary.textContent =
      `${chars.length.toLocaleString()} characters, ` +
      `${data.bits_per_char.toFixed(3)} bits per character. ${data.note}`;
    const controls = element("div", "ci-controls");
    const colourBy = element("select", "ci-colour-by");
    for (const [value, label] of [["surprise", "surprise (bits)"], ["unit", "a unit"]]) {
      const option = element("option", "", label);
      option.value = value;
      colourBy.append(option);
    }
    const layerPick = element("select", "ci-layer");
    const quantityPick = element("select", "ci-quantity");
    const unitPick = element("select", "ci-unit");
    data.layers.forEach((layer, index) => {
      const option = element("option", "", `layer ${index} (${layer.cell})`);
      option.value = index;
      layerPick.append(option);
    });
    const legend = element("span", "ci-legend");
    controls.append(
      labelled("Colour by", colourBy),
      labelled("Layer", layerPick),
      labelled("Quantity", quantityPick),
      labelled("Unit", unitPick),
      legend,
    );

    // The units find_units found, a row per property, strongest first.
    const found = element("div", "ci-found");
    found.append(element("div", "ci-found-title", "Units that follow the text (Pearson's r):"));
    for (const [property, units] of Object.entries(data.found)) {
      const row = element("div", "ci-found-row");
      row.append(element("span", "ci-property", property));
      if (!units.length) row.append(element("span", "ci-none", "not in this text"));
      for (const unit of units.slice(0, FOUND_SHOWN)) {
        const button = element(
          "button",
          Math.abs(unit.correlation) < WEAK ? "ci-weak" : "",
          `layer ${unit.layer} ${unit.quantity.replace("_", " ")} ${unit.unit} ` +
            `(r ${unit.correlation.toFixed(2)})`,
        );
        button.type = "button";
        button.addEventListener("click", () => pick(unit.layer, unit.quantity, unit.unit));
        row.append(button);
      }
      found.append(row);
    }

    const text = element("pre", "ci-text");
    const fragment = document.createDocumentFragment();
    const spans = chars.map((char, index) => {
      const span = element("span", "", char);
      span.dataset.index = index;
      fragment.append(span);
      return span;
    });
    text.append(fragment);
    const tip = element("div", "ci-tip");
    tip.hidden = true;
    container.append(summary, controls, found, text, tip);

    let shown = null; // the unit's values the text is coloured by, or null: surprise

    function fillQuantities() {
      const layer = data.layers[layerPick.value];
      const current = quantityPick.value;
      quantityPick.replaceChildren();
      for (const quantity of layer.quantities) {
        const option = element("option", "", quantity.replace("_", " "));
        option.value = quantity;
        quantityPick.append(option);
      }
      if (layer.quantities.includes(current)) quantityPick.value = current;
      const unit = unitPick.value;
      unitPick.replaceChildren();
      for (const index of layer.held) {
        const option = element("option", "", String(index));
        option.value = index;
        unitPick.append(option);
      }
      if (layer.held.includes(Number(unit))) unitPick.value = unit;
    }

    function colour() {
      const unitMode = colourBy.value === "unit";
      for (const pickOne of [layerPick, quantityPick, unitPick]) pickOne.disabled = !unitMode;
      if (!unitMode) {
        shown = null;
        spans.forEach((span, i) => (span.style.backgroundColor = surpriseColour(data.bits[i])));
        legend.textContent = `orange: surprise, full at ${SURPRISE_BITS} bits`;
        return;
      }
      const layer = data.layers[layerPick.value];
      const quantity = quantityPick.value;
      const signed = data.signed.includes(quantity);
      shown = unitValues(layer, quantity, Number(unitPick.value));
      const scale = Math.max(Math.abs(shown.low), Math.abs(shown.high)) || 1;
      spans.forEach((span, i) => {
        span.style.backgroundColor = valueColour(shown.values[i], signed, scale);
      });
      legend.textContent = signed
        ? `blue below 0, red above (full at ${scale.toFixed(2)})`
        : "green: how open the gate is (0 to 1)";
    }

    function pick(layer, quantity, unit) {
      colourBy.value = "unit";
      layerPick.value = layer;
      fillQuantities();
      quantityPick.value = quantity;
      unitPick.value = unit;
      colour();
    }

    function showTip(event) {
      const index = event.target.dataset && event.target.dataset.index;
      if (index === undefined) return;
      const i = Number(index);
      const lines = [
        `${visible(chars[i])}: ${data.bits[i].toFixed(2)} bits of surprise`,
        ...data.top[i].map(([char, p]) => `  ${visible(char)}  ${(p * 100).toFixed(1)}%`),
      ];
      if (shown) lines.push(`unit value ${shown.values[i].toFixed(3)}`);
      tip.textContent = lines.join("\n");
      tip.hidden = false;
      const box = event.target.getBoundingClientRect();
      const outer = container.getBoundingClientRect();
      tip.style.left = `${box.left - outer.left}px`;
      tip.style.top = `${box.bottom - outer.top + 4}px`;
    }

    text.addEventListener("mouseover", showTip);
    text.addEventListener("mouseleave", () => (tip.hidden = true));
    colourBy.addEventListener("change", colour);
    layerPick.addEventListener("change", () => {
      fillQuantities();
      colour();
    });
    quantityPick.addEventListener("change", colour);
    unitPick.addEventListener("change", colour);
    fillQuantities();
    colour();
  }

  function labelled(text, control) {
    const label = element("label", "ci-label", `${text} `);
    label.append(control);
    return label;
  }

  function visible(char) {
    return { "\n": "↵ (newline)", " ": "␣ (space)", "\t": "⇥ (tab)" }[char] || char;
  }

  return { render };
})();
