// Drives PM2 for supervisor_bench.py through PM2's programmatic API, from this one node process.
// argv: <folder holding node_modules/pm2>.  PM2_HOME comes from the environment (a fresh folder).
// One JSON request per stdin line, one answer per stdout line prefixed "@@" (PM2 may print too):
//   {"op":"connect"} -> {"ok":true,"result":{"daemon":pid}}
//   {"op":"start","apps":[{name,cwd,env}],"interpreter":"/path/python"}  one pm2.start({apps}) call, fork mode
//   {"op":"stop"}    pm2.stop("all")
//   {"op":"status"}  pm2.list(): names, pids and states, what `pm2 jlist` answers
//   {"op":"quit"}    pm2.killDaemon(), then this process ends
// "ms" is the call's own time, measured here.
"use strict";
const fs = require("fs");
const path = require("path");
const readline = require("readline");

const pm2 = require(path.join(process.argv[2], "node_modules", "pm2"));

function call(fn) {
  return new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value))));
}

async function run(request) {
  switch (request.op) {
    case "connect": {
      await call((cb) => pm2.connect(false, cb));
      const pidFile = path.join(process.env.PM2_HOME, "pm2.pid");
      return { daemon: parseInt(fs.readFileSync(pidFile, "utf8"), 10) };
    }
    case "start": {
      const apps = request.apps.map((app) => ({
        name: app.name,
        script: "server.py",
        cwd: app.cwd,
        interpreter: request.interpreter,
        exec_mode: "fork",
        env: app.env,
        autorestart: true,
        vizion: false,
        pmx: false,
        automation: false,
        out_file: "/dev/null",
        error_file: "/dev/null",
      }));
      await call((cb) => pm2.start({ apps }, cb));
      return null;
    }
    case "stop":
      await call((cb) => pm2.stop("all", cb));
      return null;
    case "status": {
      const list = await call((cb) => pm2.list(cb));
      return list.map((p) => [p.name, p.pid, p.pm2_env.status]);
    }
    case "quit":
      await call((cb) => pm2.killDaemon(cb));
      pm2.disconnect();
      return null;
    default:
      throw new Error(`unknown op ${request.op}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    const request = JSON.parse(line);
    const t0 = process.hrtime.bigint();
    let answer;
    try {
      answer = { ok: true, result: await run(request) };
    } catch (err) {
      answer = { ok: false, error: String(err && err.stack ? err.stack : err) };
    }
    answer.ms = Number(process.hrtime.bigint() - t0) / 1e6;
    process.stdout.write("@@" + JSON.stringify(answer) + "\n");
    if (request.op === "quit") process.exit(0);
  });
});
lines.on("close", () => queue.then(() => process.exit(0)));
