// Tasks: progress bars for installs and downloads, their logs, cancellation.

import { get, getText, post } from "./api.js";
import { clear, every, h, progressBar, showError, toast } from "./ui.js";

const ACTIVE = new Set(["queued", "running"]);

export function render(container, params, { onHostEvent }) {
  const body = h("tbody", { id: "tasks-body" });
  const empty = h("p", { class: "muted", hidden: true, id: "tasks-empty" }, "No tasks yet.");
  const logTitle = h("h2", { id: "task-log-title" });
  const logOutput = h("pre", { class: "log", id: "task-log" });
  const logBox = h("section", { class: "task-log", hidden: true }, logTitle, logOutput);
  container.append(
    h("h1", {}, "Tasks"),
    h("table", { class: "data", id: "tasks-table" },
      h("thead", {}, h("tr", {}, ...["Id", "Kind", "App", "Version", "Status", "Progress", "Created", "Error", ""].map((c) => h("th", {}, c)))),
      body),
    empty, logBox,
  );

  const state = { selected: params[0] ? Number(params[0]) : null, stopped: false, logTimer: null };

  const paint = (tasks) => {
    clear(body);
    empty.hidden = tasks.length > 0;
    for (const task of tasks) {
      const bar = progressBar(task.progress);
      body.append(h("tr", { dataset: { task: String(task.id), status: task.status } },
        h("td", {}, String(task.id)),
        h("td", {}, task.kind),
        h("td", {}, task.module),
        h("td", {}, task.version || (task.result && task.result.version) || ""),
        h("td", { class: "status" }, h("span", { class: `status-pill ${task.status}` }, task.status)),
        h("td", { class: "progress-cell" }, bar),
        h("td", { class: "small" }, task.create_time || ""),
        h("td", { class: "error small" }, task.error || ""),
        h("td", { class: "actions" },
          h("a", { class: "button small secondary", href: `#/tasks/${task.id}`, dataset: { action: "log" } }, "Log"),
          ACTIVE.has(task.status)
            ? h("button", { type: "button", class: "small danger", dataset: { action: "cancel" }, onclick: () => cancel(task) }, "Cancel")
            : null)));
    }
  };

  const refresh = async () => {
    try {
      const tasks = await get("/api/tasks");
      if (!state.stopped) paint(tasks);
      return tasks.some((t) => ACTIVE.has(t.status));
    } catch (err) {
      if (!state.stopped) showError(err);
      return false;
    }
  };

  async function cancel(task) {
    try {
      const record = await post(`/api/tasks/${task.id}/cancel`);
      toast(`Task ${task.id}: ${record.status === "running" ? "asked to stop" : record.status}`);
    } catch (err) {
      showError(err);
    }
    refresh();
  }

  const showLog = async (id) => {
    logBox.hidden = false;
    logTitle.textContent = `Log of task ${id}`;
    let offset = 0;
    logOutput.textContent = "";
    const read = async () => {
      if (state.stopped) return;
      try {
        const part = await getText(`/api/tasks/${id}/log?start=${offset}`);
        logOutput.append(document.createTextNode(part.text));
        offset = Math.max(offset, part.size);
        if (part.more) state.logTimer = setTimeout(read, 500);
      } catch (err) {
        logOutput.append(document.createTextNode(`\n[${err.message}]`));
      }
    };
    read();
  };

  if (state.selected) showLog(state.selected);
  refresh();
  const unsubscribe = onHostEvent((event) => {
    if (event.name.startsWith("task-")) refresh();
  });
  const stop = every(1000, refresh); // progress moves without events
  return () => {
    state.stopped = true;
    clearTimeout(state.logTimer);
    unsubscribe();
    stop();
  };
}
