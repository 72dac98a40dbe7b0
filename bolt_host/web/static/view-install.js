// Install: browse the local repository and the registry, preview a package, install it.

import { get, post } from "./api.js";
import { clear, h, progressBar, showError, toast } from "./ui.js";

const FACTS = [
  ["name", (m) => m.name],
  ["version", (m) => m.version],
  ["description", (m) => m.description],
  ["display name", (m) => m.bolt && m.bolt.displayName],
  ["author", (m) => (typeof m.author === "object" && m.author ? m.author.name : m.author)],
  ["license", (m) => m.license],
  ["keywords", (m) => (Array.isArray(m.keywords) ? m.keywords.join(", ") : "")],
  ["starts with", (m) => (m._install ? (m._install.problem || m._install.startCommand) : "")],
  ["server", (m) => (m._install && m._install.serverless ? "no (server-less: public files only)" : m.bolt && m.bolt.server === false ? "no (runs without a port)" : "yes")],
  ["system app", (m) => (m.bolt && m.bolt.system ? "yes" : "no")],
  ["tags", (m) => (m.bolt && Array.isArray(m.bolt.tags) ? m.bolt.tags.join(", ") : "")],
  ["dependencies", (m) => (m.dependencies ? `${Object.keys(m.dependencies).length}: ${Object.keys(m.dependencies).join(", ")}` : "none")],
  ["install scripts", (m) => (m._install && m._install.installScripts ? "requested (run only if you grant it)" : "none")],
  ["homepage", (m) => m.homepage],
];

export function render(container, params) {
  const tab = params[0] === "registry" ? "registry" : "local";
  const filter = h("input", { type: "search", id: "install-filter", placeholder: "Filter by name or keyword", "aria-label": "Filter" });
  const list = h("ul", { class: "packages", id: "package-list" });
  const preview = h("section", { class: "preview", id: "preview" }, h("p", { class: "muted" }, "Choose a package to preview it."));
  const refresh = h("button", { type: "button", class: "secondary small", id: "catalog-refresh", hidden: tab !== "registry" }, "Refresh from the registry");
  container.append(
    h("div", { class: "heading" }, h("h1", {}, "Install"),
      h("nav", { class: "tabs" },
        h("a", { href: "#/install/local", class: tab === "local" ? "active" : "", id: "tab-local" }, "Local repository"),
        h("a", { href: "#/install/registry", class: tab === "registry" ? "active" : "", id: "tab-registry" }, "Registry")),
      refresh),
    h("div", { class: "install-layout" }, h("div", { class: "package-column" }, filter, list), preview),
  );

  const state = { packages: [], installed: new Map(), stopped: false, timer: null };

  const paint = () => {
    clear(list);
    const needle = filter.value.trim().toLowerCase();
    const shown = state.packages.filter((p) =>
      !needle || p.name.toLowerCase().includes(needle) || (p.keywords || []).some((k) => k.toLowerCase().includes(needle)));
    if (!shown.length) list.append(h("li", { class: "muted" }, state.packages.length ? "Nothing matches." : "No packages here."));
    for (const pkg of shown) {
      const installed = state.installed.get(pkg.appName);
      list.append(h("li", { dataset: { package: pkg.name } },
        h("button", { type: "button", class: "package", onclick: () => showPreview(pkg) },
          h("strong", {}, pkg.name), " ", h("span", { class: "muted" }, pkg.version),
          installed ? h("span", { class: "badge" }, `installed ${installed.version}`) : null,
          h("div", { class: "small muted" }, pkg.description || ""))));
    }
  };

  const load = async (forceRefresh = false) => {
    try {
      const apps = await get("/api/apps");
      state.installed = new Map(apps.map((a) => [a.name, a]));
      if (tab === "local") {
        const found = await get("/api/apps/local");
        state.packages = found.map((f) => ({
          kind: "local", path: f.path, name: f.package.name, appName: f.package.name, version: f.package.version,
          description: f.package.description, keywords: f.package.keywords || [],
        }));
      } else {
        const catalog = await get(`/api/catalog${forceRefresh ? "?refresh=true" : ""}`);
        if (!catalog.sources.includes("registry")) {
          clear(list).append(h("li", { class: "muted", id: "no-registry" }, "No registry is configured on this host (start it with --registry URL)."));
          return;
        }
        state.packages = catalog.entries.filter((e) => (e.sources || [e.source]).includes("registry")).map((e) => ({
          kind: "registry", name: e.name, appName: appNameFor(e.name), version: e.version, versions: e.versions,
          description: e.description, keywords: e.keywords || [],
        }));
        if (catalog.errors && catalog.errors.registry) toast(`Registry: ${catalog.errors.registry}`, "error");
      }
      if (!state.stopped) paint();
    } catch (err) {
      showError(err);
    }
  };

  async function showPreview(pkg) {
    clear(preview).append(h("p", { class: "muted" }, `Loading ${pkg.name}…`));
    let manifest;
    let readmeHtml = null;
    try {
      if (pkg.kind === "local") {
        manifest = await post("/api/apps/local-package", { path: pkg.path });
        readmeHtml = await post("/api/apps/local-readme", { path: pkg.path, format: "html" }).catch(() => null);
      } else {
        const found = await get(`/api/catalog/package?name=${encodeURIComponent(pkg.name)}`);
        manifest = found.manifest;
        readmeHtml = found.readmeHtml;
      }
    } catch (err) {
      clear(preview).append(h("p", { class: "error" }, err.message));
      return;
    }
    const installed = state.installed.get(pkg.appName);
    const system = h("input", { type: "checkbox", id: "install-system", checked: Boolean(manifest.bolt && manifest.bolt.system) });
    const version = pkg.kind === "registry" && pkg.versions && pkg.versions.length > 1
      ? h("select", { id: "install-version", "aria-label": "Version" },
          ...pkg.versions.slice().reverse().map((v) => h("option", { value: v, selected: v === pkg.version }, v)))
      : null;
    const scripts = manifest._install && manifest._install.installScripts
      ? h("input", { type: "checkbox", id: "install-scripts" })
      : null;
    const status = h("div", { class: "install-status", id: "install-status" });
    const button = h("button", { type: "button", id: "install-button" }, installed ? `Upgrade (installed ${installed.version})` : "Install");
    button.addEventListener("click", () => install(pkg, { system: system.checked, installScripts: Boolean(scripts && scripts.checked), upgrade: Boolean(installed), version: version && version.value }, button, status));
    const facts = h("dl", { class: "facts", id: "package-facts" });
    for (const [label, pick] of FACTS) {
      const value = pick(manifest);
      if (value) facts.append(h("dt", {}, label), h("dd", {}, String(value)));
    }
    const readmeBox = h("article", { class: "readme", id: "package-readme" });
    if (readmeHtml) {
      readmeBox.innerHTML = readmeHtml; // rendered and sanitized by the host (allow-listed tags, safe links, no images)
    } else {
      readmeBox.append(h("p", { class: "muted" }, "This package has no README."));
    }
    clear(preview).append(
      h("h2", {}, manifest.name, " ", h("span", { class: "muted" }, manifest.version)),
      facts,
      h("div", { class: "install-box" },
        h("label", { class: "inline" }, system, " Install as a system app (it may act for logged-in admins)"),
        scripts ? h("label", { class: "inline" }, scripts, " Run its install scripts (npm lifecycle scripts run code on this host)") : null,
        version ? h("label", { class: "inline" }, "Version ", version) : null,
        button, status),
      h("h3", {}, "README"),
      readmeBox,
    );
  }

  async function install(pkg, options, button, status) {
    button.disabled = true;
    clear(status);
    try {
      if (pkg.kind === "local") {
        status.append(h("span", { class: "muted" }, "Installing…"));
        const app = await post("/api/apps/local", { path: pkg.path, system: options.system, upgrade: options.upgrade, installScripts: options.installScripts });
        finished(status, app);
      } else {
        const body = { name: pkg.name, system: options.system, upgrade: options.upgrade, installScripts: options.installScripts };
        if (options.version) body.version = options.version;
        const task = await post("/api/apps/install-task", body);
        const bar = progressBar(task.progress);
        const label = h("span", { class: "muted small", id: "install-task-status" }, `task ${task.id}: ${task.status}`);
        clear(status).append(bar, label);
        await followTask(task.id, bar, label);
        finished(status, await get(`/api/apps/${encodeURIComponent(pkg.appName)}`));
      }
      button.textContent = "Installed"; // done: installing again would only be refused
      load();
    } catch (err) {
      clear(status).append(h("p", { class: "error", id: "install-error" }, err.message));
      showError(err);
      button.disabled = false;
    }
  }

  async function followTask(id, bar, label) {
    for (;;) {
      if (state.stopped) return;
      const task = await get(`/api/tasks/${id}`);
      bar.set(task.progress);
      label.textContent = `task ${task.id}: ${task.status}`;
      if (task.status === "succeeded") return;
      if (task.status === "failed" || task.status === "canceled") throw new Error(`Install ${task.status}: ${task.error || ""}`);
      await new Promise((resolve) => { state.timer = setTimeout(resolve, 400); });
    }
  }

  function finished(status, app) {
    clear(status).append(h("p", { class: "ok", id: "install-done" }, `Installed ${app.name} ${app.version}. `,
      h("a", { href: "#/apps" }, "Go to the apps")));
    toast(`Installed ${app.name} ${app.version}`);
  }

  filter.addEventListener("input", paint);
  refresh.addEventListener("click", () => load(true));
  load();
  return () => {
    state.stopped = true;
    clearTimeout(state.timer);
  };
}

function appNameFor(packageName) {
  if (!packageName.startsWith("@")) return packageName;
  const [scope, name] = packageName.slice(1).split("/");
  return `${name}@${scope}`;
}
