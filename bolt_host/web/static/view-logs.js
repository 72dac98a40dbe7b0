// The log viewer: pick an app and follow its log (server-sent events), reconnecting where it left off.

import { get } from "./api.js";
import { h } from "./ui.js";

const MAX_CHARS = 400000; // what the page keeps; older text is dropped from the view

export function render(container, params) {
  const name = params[0] || "";
  const picker = h("select", { id: "log-app", "aria-label": "App" }, h("option", { value: "" }, "Choose an app…"));
  const follow = h("input", { type: "checkbox", id: "log-autoscroll", checked: true });
  const output = h("pre", { id: "log-output", class: "log", tabindex: "0" });
  const status = h("span", { id: "log-status", class: "muted small" });
  const clearButton = h("button", { type: "button", class: "secondary small", id: "log-clear", onclick: () => { output.textContent = ""; } }, "Clear view");
  container.append(
    h("div", { class: "heading" }, h("h1", {}, "Logs"), picker,
      h("label", { class: "inline" }, follow, " Scroll with new lines"), clearButton, status),
    output,
  );
  picker.addEventListener("change", () => {
    location.hash = picker.value ? `#/logs/${encodeURIComponent(picker.value)}` : "#/logs";
  });

  get("/api/apps").then((apps) => {
    for (const app of apps) picker.append(h("option", { value: app.name, selected: app.name === name }, app.name));
  }).catch(() => null);

  if (!name) {
    output.textContent = "Choose an app to follow its log.";
    return () => {};
  }

  let source = null;
  let received = 0; // characters (code points) received so far: where a reconnect starts
  let retry = null;
  let closed = false;

  const connect = () => {
    source = new EventSource(`/api/apps/${encodeURIComponent(name)}/logs?follow=true&start=${received}`);
    source.addEventListener("open", () => { status.textContent = `following ${name}`; });
    source.addEventListener("message", (message) => {
      let chunk = "";
      try {
        chunk = JSON.parse(message.data);
      } catch {
        return;
      }
      received += Array.from(chunk).length;
      output.append(document.createTextNode(chunk));
      if (output.textContent.length > MAX_CHARS) output.textContent = output.textContent.slice(-MAX_CHARS);
      if (follow.checked) output.scrollTop = output.scrollHeight;
    });
    source.addEventListener("error", () => {
      source.close();
      if (closed) return;
      status.textContent = "connection lost; reconnecting…";
      retry = setTimeout(connect, 2000);
    });
  };
  get(`/api/apps/${encodeURIComponent(name)}`).then(connect).catch((err) => {
    closed = true;
    output.textContent = err.message;
  });
  return () => {
    closed = true;
    clearTimeout(retry);
    if (source) source.close();
  };
}
