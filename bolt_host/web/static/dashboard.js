// The dashboard's entry point: log-in, the hash router, and the shared event stream.

import { get, onUnauthorized, post } from "./api.js";
import { clear, showError } from "./ui.js";
import * as appsView from "./view-apps.js";
import * as installView from "./view-install.js";
import * as logsView from "./view-logs.js";
import * as systemView from "./view-system.js";
import * as tasksView from "./view-tasks.js";

const VIEWS = { apps: appsView, install: installView, logs: logsView, tasks: tasksView, system: systemView };
const EVENT_NAMES = [
  "app-installed", "app-updated", "app-uninstalling", "app-uninstalled", "app-downloaded",
  "app-starting", "app-started", "app-stopping", "app-stopped", "app-crashed", "app-backoff", "app-failed",
  "task-queued", "task-started", "task-succeeded", "task-failed", "task-canceled",
];

const state = { user: null, cleanup: null, source: null, listeners: new Set() };

/** Views subscribe to host events here; returns an unsubscribe function. */
export function onHostEvent(listener) {
  state.listeners.add(listener);
  return () => state.listeners.delete(listener);
}

function setLive(text, ok) {
  const indicator = document.getElementById("live-indicator");
  indicator.textContent = text;
  indicator.classList.toggle("on", ok);
}

function openEvents() {
  closeEvents();
  const source = new EventSource("/api/events/stream");
  state.source = source;
  source.addEventListener("open", () => setLive("live", true));
  source.addEventListener("error", () => setLive("reconnecting", false));
  const deliver = (message) => {
    let event = null;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    state.listeners.forEach((listener) => listener(event));
  };
  for (const name of EVENT_NAMES) source.addEventListener(name, deliver);
}

function closeEvents() {
  if (state.source) state.source.close();
  state.source = null;
  setLive("offline", false);
}

function showLogin(message = "") {
  stopView();
  closeEvents();
  state.user = null;
  document.getElementById("topbar").hidden = true;
  clear(document.getElementById("view"));
  document.getElementById("login-view").hidden = false;
  document.getElementById("login-error").textContent = message;
  const next = returnPath();
  if (next) document.getElementById("login-hint").textContent = `Log in to open ${next}.`;
  document.getElementById("login-name").focus();
}

function showApp(user) {
  state.user = user;
  document.getElementById("login-view").hidden = true;
  document.getElementById("topbar").hidden = false;
  document.getElementById("who").textContent = user.name;
  openEvents();
  route();
}

function stopView() {
  if (state.cleanup) {
    try {
      state.cleanup();
    } catch (err) {
      console.error(err);
    }
  }
  state.cleanup = null;
}

function route() {
  if (!state.user) return;
  const [name = "apps", ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const view = VIEWS[name] || appsView;
  stopView();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === (VIEWS[name] ? name : "apps"));
  }
  const container = clear(document.getElementById("view"));
  document.title = `bolt-host: ${VIEWS[name] ? name : "apps"}`;
  const params = rest.map((part) => decodeURIComponent(part));
  state.cleanup = view.render(container, params, { onHostEvent }) || null;
}

async function login(event) {
  event.preventDefault();
  const button = document.getElementById("login-submit");
  const error = document.getElementById("login-error");
  error.textContent = "";
  button.disabled = true;
  try {
    const answer = await post("/api/users/login", {
      name: document.getElementById("login-name").value,
      password: document.getElementById("login-password").value,
    });
    document.getElementById("login-password").value = "";
    const next = returnPath();
    if (next) {
      location.assign(next); // back to the app page that sent us here (any user it lets in)
      return;
    }
    if (!answer.user.isAdmin) {
      await post("/api/users/logout").catch(() => null);
      error.textContent = "This dashboard is for admins; your user has no admin role.";
      return;
    }
    showApp(answer.user);
  } catch (err) {
    error.textContent = err.message;
  } finally {
    button.disabled = false;
  }
}

// Where to go after logging in: ?next=/x/<app>/... set by the host's redirect, same origin only.
function returnPath() {
  const next = new URLSearchParams(location.search).get("next");
  if (!next || !next.startsWith("/x/") || next.includes("\\")) return null;
  return next;
}

async function logout() {
  try {
    await post("/api/users/logout");
  } catch (err) {
    showError(err);
  }
  showLogin("You are logged out.");
}

async function start() {
  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  onUnauthorized(() => {
    if (state.user) showLogin("Your session has ended; log in again.");
  });
  try {
    const me = await get("/api/users/@current");
    const next = returnPath();
    if (next) {
      location.replace(next);
      return;
    }
    if (me.isAdmin) {
      showApp(me);
      return;
    }
    showLogin("This dashboard is for admins.");
  } catch {
    showLogin();
  }
}

start();

