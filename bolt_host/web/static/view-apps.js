// The apps table: live status, instances, CPU, memory, uptime and restarts; start, stop, restart, remove.

import { bytes, del, duration, get, percent, post } from "./api.js";
import { confirmDialog, every, h, showError, toast } from "./ui.js";
import { systemPanel } from "./view-system.js";

const ACTIVE = new Set(["starting", "running", "stopping", "backoff"]);

export function render(container, _params, { onHostEvent }) {
  const body = h("tbody", { id: "apps-body" });
  const empty = h("p", { class: "muted", id: "apps-empty", hidden: true }, "No apps installed yet. ",
    h("a", { href: "#/install" }, "Install one."));
  const table = h("table", { class: "data", id: "apps-table" },
    h("thead", {}, h("tr", {}, ...["Name", "Version", "Status", "Port", "Instances", "CPU", "Memory", "Uptime", "Restarts", ""]
      .map((c) => h("th", { class: c ? c.toLowerCase() : "actions" }, c)))),
    body);
  const panel = systemPanel({ compact: true });
  const summary = h("span", { class: "muted", id: "apps-summary" });
  container.append(
    h("div", { class: "heading" }, h("h1", {}, "Apps"), summary, h("a", { class: "button", href: "#/install" }, "Install an app")),
    panel.element, table, empty,
  );

  const state = { apps: [], contexts: new Map(), running: new Map(), busy: new Set(), stopped: false };

  const rows = new Map(); // app name -> {tr, sig, stats}

  const paint = () => {
    empty.hidden = state.apps.length > 0;
    const running = state.apps.filter((app) => (state.contexts.get(app.name) || {}).status === "running").length;
    summary.textContent = `${running} of ${state.apps.length} running`; // painted with the table, never stale
    const errored = state.apps.filter((app) => (state.contexts.get(app.name) || {}).errored).length;
    if (errored) summary.textContent += `, ${errored} errored`;
    const seen = new Set();
    let previous = null;
    for (const app of state.apps) {
      const context = state.contexts.get(app.name);
      const sig = JSON.stringify([app, context && [context.status, context.port, context.reason, context.restarts, context.pid,
        context.errored, context.lastExit && context.lastExit.at, context.instances, state.running.get(app.name)],
        state.busy.has(app.name)]);
      let entry = rows.get(app.name);
      if (!entry || entry.sig !== sig) {
        const fresh = { ...row(app, context), sig };
        if (entry) entry.tr.replaceWith(fresh.tr);
        entry = fresh;
        rows.set(app.name, entry);
      }
      entry.stats.cpu.textContent = context ? percent(context.cpu) : "-";
      entry.stats.memory.textContent = context ? bytes(context.memory) : "-";
      entry.stats.uptime.textContent = context ? duration(context.uptime) : "-";
      const wanted = previous ? previous.nextSibling : body.firstChild;
      if (wanted !== entry.tr) body.insertBefore(entry.tr, wanted);
      previous = entry.tr;
      seen.add(app.name);
    }
    for (const [name, entry] of rows) {
      if (!seen.has(name)) {
        entry.tr.remove();
        rows.delete(name);
      }
    }
  };

  const row = (app, context) => {
    // errored: it ended on its own with a failure and is not coming back by itself (lastExit says how)
    const status = context ? (context.errored ? "errored" : context.status) : "stopped";
    const why = context && context.errored && context.lastExit ? context.lastExit.reason : (context && context.reason) || "";
    const busy = state.busy.has(app.name);
    const running = ACTIVE.has(status);
    const action = (name, label, cls = "") =>
      h("button", { type: "button", class: `small ${cls}`, dataset: { action: name }, disabled: busy, onclick: () => act(app, name) }, label);
    // A server-less app (nothing to run) has no Start/Stop: it is opened at its public files.
    const serverless = app.command === null;
    const page = app.index && app.index !== "/" ? app.index : "/";
    const open = serverless
      ? h("a", { class: "button small", href: `/public/${encodeURIComponent(app.name)}${page === "/" ? "/index.html" : page}`, target: "_blank", rel: "noopener", dataset: { action: "open" } }, "Open")
      : context && status === "running" && context.port
        ? h("a", { class: "button small secondary", href: `/x/${encodeURIComponent(app.name)}${page}`, target: "_blank", rel: "noopener", dataset: { action: "open" } }, "Open")
        : null;
    const stats = { cpu: h("td", { class: "cpu" }), memory: h("td", { class: "memory" }), uptime: h("td", { class: "uptime" }) };
    const tr = h("tr", { dataset: { app: app.name, status } },
      h("td", { class: "name" }, h("strong", {}, app.displayName || app.name),
        app.displayName && app.displayName !== app.name ? h("div", { class: "muted small" }, app.name) : null,
        app.system ? h("span", { class: "badge" }, "system") : null),
      h("td", { class: "version" }, app.version || ""),
      h("td", { class: "status" }, h("span", { class: `status-pill ${status}`, title: why }, status),
        status === "errored" ? h("div", { class: "reason small error" }, why) : null),
      h("td", { class: "port" }, context && context.port ? String(context.port) : "-"),
      // running/wanted: how many of its processes serve now, of how many it should run
      h("td", { class: "instances" }, context ? `${state.running.get(app.name) || 0}/${context.instances || 1}` : "-"),
      stats.cpu, stats.memory, stats.uptime,
      h("td", { class: "restarts" }, context ? String(context.restarts ?? 0) : "0"),
      h("td", { class: "actions" },
        serverless ? null : running ? action("stop", "Stop") : action("start", "Start"),
        serverless ? null : action("restart", "Restart", "secondary"),
        h("a", { class: "button small secondary", href: `#/logs/${encodeURIComponent(app.name)}`, dataset: { action: "logs" } }, "Logs"),
        open,
        action("remove", "Remove", "danger")),
    );
    return { tr, stats };
  };

  const refreshLive = async () => {
    const contexts = await get("/api/apps/@live");
    // one row per app: instance 0's context (others of a scaled app are in @live too)
    state.contexts = new Map(contexts.filter((c) => !c.instance).map((c) => [c.name, c]));
    state.running = new Map();
    for (const c of contexts) {
      if (c.status === "running") state.running.set(c.name, (state.running.get(c.name) || 0) + 1);
    }
  };

  const refreshAll = async () => {
    try {
      const [apps] = await Promise.all([get("/api/apps"), refreshLive()]);
      state.apps = apps;
      if (!state.stopped) paint();
    } catch (err) {
      if (!state.stopped) showError(err);
    }
  };

  async function act(app, name) {
    if (name === "remove") {
      const answer = await confirmDialog({
        title: `Remove ${app.name}?`,
        text: `${app.name} ${app.version} will be stopped and its files deleted.`,
        okLabel: "Remove",
        option: "Also delete the app's database",
      });
      if (!answer.ok) return;
      state.busy.add(app.name);
      paint();
      try {
        await del(`/api/apps/${encodeURIComponent(app.name)}`, {
          deleteSourceFolder: true, deletePublicFolder: true, deleteDatabase: answer.option,
        });
        toast(`Removed ${app.name}`);
      } catch (err) {
        showError(err);
      } finally {
        state.busy.delete(app.name);
        await refreshAll();
      }
      return;
    }
    state.busy.add(app.name);
    paint();
    try {
      const context = await post(`/api/apps/${name}`, { name: app.name });
      state.contexts.set(app.name, context);
      toast(`${app.name}: ${{ start: "started", stop: "stopped", restart: "restarted" }[name] || context.status}`);
    } catch (err) {
      showError(err);
    } finally {
      state.busy.delete(app.name);
      await refreshAll();
    }
  }

  let pending = null;
  const unsubscribe = onHostEvent((event) => {
    if (!event.name.startsWith("app-") || pending) return;
    pending = setTimeout(() => {
      pending = null;
      refreshAll();
    }, 100);
  });
  refreshAll();
  const stopPolling = every(2000, async () => {
    try {
      await refreshLive();
      if (!state.stopped) paint();
    } catch {
      // the next event or poll tries again
    }
  });
  return () => {
    state.stopped = true;
    unsubscribe();
    stopPolling();
    panel.stop();
    clearTimeout(pending);
  };
}
