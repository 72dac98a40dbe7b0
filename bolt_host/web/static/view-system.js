// The system panel: CPU, memory and disk of the machine, and the host's version and uptime.

import { bytes, duration, get, percent } from "./api.js";
import { clear, every, h, progressBar } from "./ui.js";

function meter(label, fraction, detail, id) {
  const bar = progressBar(fraction);
  return h("div", { class: "meter", id }, h("div", { class: "meter-label" }, label), bar, h("div", { class: "muted small" }, detail));
}

/** A small panel that refreshes itself; returns {element, stop}. */
export function systemPanel({ compact = false } = {}) {
  const element = h("section", { class: compact ? "system-panel compact" : "system-panel", id: "system-panel" }, "Loading system facts…");
  const refresh = async () => {
    let info;
    try {
      info = await get("/api/system");
    } catch (err) {
      clear(element).append(h("p", { class: "error" }, `System facts unavailable: ${err.message}`));
      return;
    }
    const cpu = info.cpu || {};
    const load = Array.isArray(cpu.load) ? cpu.load.map((v) => v.toFixed(2)).join(" ") : "-";
    clear(element).append(
      meter("CPU", (cpu.percent || 0) / 100, `${percent(cpu.percent)} of ${cpu.count} cores, load ${load}`, "system-cpu"),
      meter("Memory", (info.memory.percent || 0) / 100, `${bytes(info.memory.used)} of ${bytes(info.memory.total)} (${percent(info.memory.percent)})`, "system-memory"),
      meter("Disk", (info.disk.percent || 0) / 100, `${bytes(info.disk.used)} of ${bytes(info.disk.total)} used, ${bytes(info.disk.free)} free`, "system-disk"),
      compact
        ? h("div", { class: "facts small" },
            h("div", {}, `bolt-host ${info.version}`),
            h("div", {}, `up ${duration(info.uptime)}`))  // the apps view counts its apps with its table
        : h("dl", { class: "facts" },
            h("dt", {}, "Host version"), h("dd", { id: "system-version" }, info.version),
            h("dt", {}, "Host uptime"), h("dd", {}, duration(info.uptime)),
            h("dt", {}, "Apps"), h("dd", {}, `${info.apps.running} running of ${info.apps.installed} installed`),
            h("dt", {}, "Host process"), h("dd", {}, `pid ${info.process.pid}, ${bytes(info.process.memory)} resident`),
            h("dt", {}, "Data dir"), h("dd", {}, info.disk.path),
            h("dt", {}, "Registry"), h("dd", {}, info.registry || "(none configured)"),
            h("dt", {}, "Machine"), h("dd", {}, `${info.hostname}: ${info.platform}, Python ${info.python}`)),
    );
  };
  refresh();
  const stop = every(compact ? 5000 : 3000, refresh);
  return { element, stop };
}

export function render(container) {
  const panel = systemPanel();
  container.append(h("h1", {}, "System"), panel.element);
  return panel.stop;
}
