// bolt-host's Node launcher, as Bolt's app_host.js: load an app's main module and, if it
// exports an app instead of listening itself, listen for it on $PORT at 127.0.0.1.
//   node app_host.js <module path, relative to the app's folder>
// Exported: an Express/Connect app or any (req, res) handler, an http(s).Server, or either of
// those as `default` (ES modules).  A module that listened while loading is left alone, so
// plain `node server.js` apps keep working; a module exporting nothing that listens keeps
// whatever else it started (a worker).
"use strict";
const http = require("http");
const net = require("net");
const path = require("path");
const { pathToFileURL } = require("url");

process.env.BOLT_CHILD_PROC = process.env.BOLT_CHILD_PROC || "true";

const target = process.argv[2];
if (!target) {
  console.error("bolt-host launcher: no module to run");
  process.exit(2);
}

let listenedItself = false;
const originalListen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  listenedItself = true;
  return originalListen.apply(this, args);
};

function listenFor(exported) {
  const port = Number(process.env.PORT);
  const host = process.env.HOST || "127.0.0.1";
  if (!port) {
    console.error("bolt-host launcher: the module exports an app but $PORT is not set (bolt.server is false?)");
    process.exit(2);
  }
  const server = exported instanceof net.Server ? exported : http.createServer(exported);
  originalListen.call(server, port, host, () => {
    console.log(`bolt-host launcher: listening for ${target} on http://${host}:${port}`);
  });
  server.on("error", (err) => {
    console.error(`bolt-host launcher: cannot listen on ${host}:${port}: ${err.message}`);
    process.exit(1);
  });
  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.once(signal, () => server.close(() => process.exit(0)));
  }
}

function pick(loaded) {
  if (typeof loaded === "function" || loaded instanceof net.Server) return loaded;
  if (loaded && (typeof loaded.default === "function" || loaded.default instanceof net.Server)) return loaded.default;
  return null;
}

async function load(file) {
  if (file.endsWith(".mjs")) return import(pathToFileURL(file).href);
  try {
    return require(file);
  } catch (err) {
    if (err && err.code === "ERR_REQUIRE_ESM") return import(pathToFileURL(file).href);
    throw err;
  }
}

(async () => {
  const file = path.resolve(process.cwd(), target);
  const loaded = await load(file);
  // A module may listen a moment after loading (after an await, say): give it one turn.
  await new Promise((resolve) => setImmediate(resolve));
  const app = pick(loaded);
  if (listenedItself || !app || (app instanceof net.Server && app.listening)) return;
  listenFor(app);
})().catch((err) => {
  console.error(`bolt-host launcher: loading ${target} failed:`);
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
