// Small DOM helpers: build elements without HTML strings, toasts, the confirmation dialog.

/**
 * h("button", {class: "x", onclick: fn, dataset: {app: "a"}}, "text", child...)
 * Text children become text nodes, so nothing passed here is ever parsed as HTML.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

export function showError(err) {
  const trace = err && err.trace ? ` (trace ${err.trace})` : "";
  const code = err && err.code ? `error ${err.code}: ` : "";
  toast(`${code}${err && err.message ? err.message : err}${trace}`, "error");
}

/** Ask for confirmation in the page's modal dialog; resolves {ok, option}. */
export function confirmDialog({ title, text, okLabel = "OK", option = null }) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  const optionLabel = document.getElementById("confirm-option-label");
  const optionBox = document.getElementById("confirm-option");
  optionLabel.hidden = !option;
  optionBox.checked = false;
  if (option) document.getElementById("confirm-option-text").textContent = option;
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve({ ok: dialog.returnValue === "ok", option: optionBox.checked }),
      { once: true },
    );
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
}

/** A progress bar element; update with bar.set(fraction). */
export function progressBar(fraction = 0) {
  const fill = h("div", { class: "fill" });
  const label = h("span", { class: "label" });
  const bar = h("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, fill, label);
  bar.set = (value) => {
    const pct = Math.max(0, Math.min(100, Math.round((Number(value) || 0) * 100)));
    fill.style.width = `${pct}%`;
    label.textContent = `${pct}%`;
    bar.setAttribute("aria-valuenow", String(pct));
  };
  bar.set(fraction);
  return bar;
}

/** Run fn every `ms` until the returned stop() is called (no overlap between runs). */
export function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(tick, ms);
    }
  };
  timer = setTimeout(tick, ms);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
