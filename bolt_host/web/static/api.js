// The host's JSON API, as the dashboard uses it: session cookie + X-CSRF-Token, Bolt envelopes.

export class ApiError extends Error {
  constructor(message, { status = 0, code = null, trace = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.trace = trace;
  }
}

const listeners = new Set();

/** Called with no arguments whenever the host says the session is gone (HTTP 401). */
export function onUnauthorized(listener) {
  listeners.add(listener);
}

export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === "bolt_csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

async function send(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(`Cannot reach the host: ${err.message}`);
  }
  if (response.status === 401 && !path.endsWith("/login")) listeners.forEach((fn) => fn());
  return response;
}

async function failure(response) {
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    envelope = null;
  }
  if (envelope && envelope.error) {
    return new ApiError(envelope.error.message || envelope.errorUserMessage || "Request failed", {
      status: response.status,
      code: envelope.code,
      trace: envelope.errorTraceId,
    });
  }
  return new ApiError(`HTTP ${response.status}`, { status: response.status });
}

/** Send a request and return the envelope's body; throws ApiError on failure. */
export async function api(method, path, body) {
  const response = await send(method, path, body);
  if (!response.ok) throw await failure(response);
  const envelope = await response.json();
  if (envelope.code !== 0) throw await failure(response);
  return envelope.body;
}

export const get = (path) => api("GET", path);
export const post = (path, body = {}) => api("POST", path, body);
export const del = (path, body = {}) => api("DELETE", path, body);

/** A text resource read by character range: {text, more, size}. */
export async function getText(path) {
  const response = await send("GET", path);
  if (!response.ok) throw await failure(response);
  return {
    text: await response.text(),
    more: response.headers.get("X-MORE-DATA") === "true",
    size: Number(response.headers.get("X-TEXT-SIZE") || 0),
  };
}

// formatting -----------------------------------------------------------------------------
export function bytes(value) {
  if (typeof value !== "number" || value <= 0) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
}

export function duration(seconds) {
  if (typeof seconds !== "number" || seconds <= 0) return "-";
  let rest = Math.floor(seconds);
  const days = Math.floor(rest / 86400);
  rest %= 86400;
  const hours = Math.floor(rest / 3600);
  rest %= 3600;
  const minutes = Math.floor(rest / 60);
  const secs = rest % 60;
  if (days) return `${days}d ${hours}h`;
  if (hours) return `${hours}h ${String(minutes).padStart(2, "0")}m`;
  if (minutes) return `${minutes}m ${String(secs).padStart(2, "0")}s`;
  return `${secs}s`;
}

export function percent(value) {
  return typeof value === "number" ? `${value.toFixed(1)}%` : "-";
}
