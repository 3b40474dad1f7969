// llamak web chat: dependency-free, talks to the same-origin OpenAI-compatible API of `llamak serve`.
//
// Hooks for tests and scripts (stable):
//   #input, #send, #stop, #new, #task, #theme, #messages, #status
//   Each message is `.msg.user` or `.msg.assistant` in #messages; its text is in a child `.text`.
//   An assistant message has data-done="false" while streaming and data-done="true" once finished
//   (normally, aborted or failed), plus data-finish = stop | length | content_filter | aborted | error.
//   <html data-theme="light|dark"> is the active theme; <body data-busy="true"> while streaming;
//   <body data-ready="true"> once /health and /v1/tasks were read. readSSE(response, onEvent) is global.
"use strict";

const $ = (id) => document.getElementById(id);
const els = {
  input: $("input"), send: $("send"), stop: $("stop"), reset: $("new"), task: $("task"), theme: $("theme"),
  messages: $("messages"), status: $("status"), system: $("system"), maxTokens: $("max-tokens"),
  temperature: $("temperature"), key: $("key"), keyRow: $("key-row"), model: $("model"),
  taskFields: $("task-fields"), labels: $("labels"), labelsRow: $("labels-row"),
  question: $("question"), questionRow: $("question-row"), lang: $("lang"), form: $("composer"),
};
const state = { model: null, auth: false, history: [], tasks: {}, controller: null, composing: false };

// ---- theme: follows prefers-color-scheme until the toggle saves a choice ----
const media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  els.theme.setAttribute("aria-pressed", String(theme === "dark"));
  els.theme.setAttribute("aria-label", theme === "dark" ? "라이트 테마로 (Light theme)" : "다크 테마로 (Dark theme)");
}
applyTheme(localStorage.getItem("llamak-theme") || (media && media.matches ? "dark" : "light"));
if (media && media.addEventListener) {
  media.addEventListener("change", (e) => { if (!localStorage.getItem("llamak-theme")) applyTheme(e.matches ? "dark" : "light"); });
}
els.theme.addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem("llamak-theme", next);
  applyTheme(next);
});

// ---- API helpers ----
els.key.value = localStorage.getItem("llamak-key") || "";
els.key.addEventListener("change", () => {
  localStorage.setItem("llamak-key", els.key.value.trim());
  loadTasks();
});

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = els.key.value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function errorMessage(resp) {
  let msg = "HTTP " + resp.status;
  try {
    const body = await resp.json();
    if (body && body.error) msg += ": " + (body.error.message || JSON.stringify(body.error));
  } catch (_) { /* not JSON */ }
  if (resp.status === 401) { els.keyRow.hidden = false; $("settings").open = true; }
  return msg;
}

// Reads an SSE response and calls onEvent(json) per `data:` event; returns when [DONE] or EOF.
// Robust across chunk boundaries: bytes go through a streaming TextDecoder (multi-byte Hangul split
// between chunks stays intact) and events are cut only at blank lines.
async function readSSE(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder("utf-8");
  let buffer = "";
  const flush = (block) => {
    const data = block.split("\n").filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
    if (!data) return false;
    if (data.trim() === "[DONE]") return true;
    onEvent(JSON.parse(data));
    return false;
  };
  for (;;) {
    const { value, done } = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    buffer = buffer.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (flush(block)) { reader.cancel().catch(() => {}); return; }
    }
    if (done) { if (buffer.trim()) flush(buffer); return; }
  }
}

// ---- rendering ----
function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  div.appendChild(span);
  els.messages.appendChild(div);
  scrollDown();
  return div;
}
function scrollDown() { els.messages.scrollTop = els.messages.scrollHeight; }
function note(div, text) {
  const small = document.createElement("small");
  small.className = "note";
  small.textContent = text;
  div.appendChild(small);
}
function setBusy(busy) {
  document.body.dataset.busy = String(busy);
  els.send.disabled = busy;
  els.stop.disabled = !busy;
}

// ---- sending ----
async function stream(url, body, div) {
  const span = div.querySelector(".text");
  let text = "", finish = null;
  div.dataset.done = "false";
  state.controller = new AbortController();
  setBusy(true);
  els.status.textContent = "";
  try {
    const resp = await fetch(url, { method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    const onEvent = (ev) => {
      if (ev.error) throw new Error(ev.error.message || JSON.stringify(ev.error));
      const choice = (ev.choices || [])[0] || {};
      const piece = (choice.delta && choice.delta.content) || (choice.message && choice.message.content) || "";
      if (piece) { text += piece; span.textContent = text; scrollDown(); }
      if (choice.finish_reason) finish = choice.finish_reason;
    };
    if ((resp.headers.get("content-type") || "").includes("text/event-stream")) await readSSE(resp, onEvent);
    else onEvent(await resp.json());  // a server that answered without streaming
    finish = finish || "stop";
    if (finish === "content_filter") { div.classList.add("refused"); note(div, "안전 필터가 응답을 거부했습니다 (refused by the guard)"); }
    if (finish === "length") note(div, "최대 토큰에 도달 (max tokens reached)");
  } catch (err) {
    if (err.name === "AbortError") { finish = "aborted"; note(div, "중지됨 (stopped)"); }
    else {
      state.controller.abort();  // release the connection
      finish = "error";
      div.classList.add("error");
      if (!text) span.textContent = String(err.message || err);
      els.status.textContent = "오류 (error): " + (err.message || err);
    }
  } finally {
    state.controller = null;
    setBusy(false);
    div.dataset.finish = finish;
    div.dataset.done = "true";
  }
  return { text, finish };
}

function numberOr(input, fallback) {
  const v = parseFloat(input.value);
  return Number.isFinite(v) ? v : fallback;
}

async function send() {
  if (state.controller) return;
  const text = els.input.value;
  const task = els.task.value;
  if (!text.trim()) { els.input.focus(); return; }
  const maxTokens = Math.max(1, Math.round(numberOr(els.maxTokens, 256)));
  els.input.value = "";
  if (task === "chat") {
    addMessage("user", text);
    const user = { role: "user", content: text };
    const messages = [];
    if (els.system.value.trim()) messages.push({ role: "system", content: els.system.value });
    messages.push(...state.history, user);
    const div = addMessage("assistant", "");
    const body = { model: state.model, messages, stream: true, max_tokens: maxTokens, temperature: numberOr(els.temperature, 0.7) };
    const out = await stream("v1/chat/completions", body, div);
    if (out.finish !== "error") state.history.push(user, { role: "assistant", content: out.text });
    else if (!els.input.value) els.input.value = text;  // failed turn (e.g. 401): not in history, text back for a retry
  } else {
    const fields = (state.tasks[task] && state.tasks[task].fields) || ["text"];
    const body = { text, lang: els.lang.value, stream: true, max_tokens: maxTokens };
    let shown = "[" + task + "] " + text;
    if (fields.includes("labels")) {
      body.labels = els.labels.value.split(/[,，、]/).map((s) => s.trim()).filter(Boolean);
      shown += "\n— labels: " + body.labels.join(", ");
    }
    if (fields.includes("question")) { body.question = els.question.value; shown += "\n— Q: " + body.question; }
    addMessage("user", shown);
    await stream("v1/tasks/" + encodeURIComponent(task), body, addMessage("assistant", ""));
  }
  els.input.focus();
}

els.form.addEventListener("submit", (e) => { e.preventDefault(); send(); });
els.stop.addEventListener("click", () => { if (state.controller) state.controller.abort(); });
els.reset.addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  state.history = [];
  els.messages.replaceChildren();
  els.status.textContent = "새 대화 (new chat)";
  els.input.focus();
});

// IME-friendly Enter: never send while a Hangul (or any IME) composition is in progress.
els.input.addEventListener("compositionstart", () => { state.composing = true; });
els.input.addEventListener("compositionend", () => { state.composing = false; });
els.input.addEventListener("keydown", (e) => {
  if (e.key !== "Enter" || e.shiftKey) return;  // Shift+Enter: newline
  if (e.isComposing || e.keyCode === 229 || state.composing) return;
  e.preventDefault();
  send();
});

// ---- tasks ----
function showTaskFields() {
  const task = els.task.value;
  const fields = task === "chat" ? [] : (state.tasks[task] && state.tasks[task].fields) || ["text"];
  els.taskFields.hidden = task === "chat";
  els.labelsRow.hidden = !fields.includes("labels");
  els.questionRow.hidden = !fields.includes("question");
  els.input.placeholder = task === "chat" ? "메시지를 입력하세요 — Enter 전송, Shift+Enter 줄바꿈" : "텍스트 (text) — Enter 실행";
}
els.task.addEventListener("change", showTaskFields);

// The task list (it may need the key: reloaded when the key changes).
async function loadTasks() {
  try {
    const resp = await fetch("v1/tasks", { headers: headers() });
    if (!resp.ok) { els.status.textContent = "작업 목록 (tasks): " + (await errorMessage(resp)); return; }
    const tasks = (await resp.json()).tasks || {};
    const selected = els.task.value;
    state.tasks = {};
    for (const opt of [...els.task.options]) if (opt.value !== "chat") opt.remove();
    for (const [name, spec] of Object.entries(tasks)) {
      if (!spec || typeof spec !== "object") continue;
      state.tasks[name] = { fields: Array.isArray(spec.fields) ? spec.fields : ["text"] };
      const opt = document.createElement("option");
      opt.value = name;
      const t = spec.title;
      opt.textContent = typeof t === "string" ? t : t && typeof t === "object" ? (t.ko || t.en || name) + " (" + name + ")" : name;
      els.task.appendChild(opt);
    }
    els.task.value = state.tasks[selected] ? selected : "chat";
    els.status.textContent = "";
  } catch (_) { /* no task presets */ }
  showTaskFields();
}

// ---- start-up: model name, auth, task list ----
(async function init() {
  try {
    const health = await (await fetch("health")).json();
    state.model = health.model || null;
    state.auth = !!health.auth;
    els.keyRow.hidden = !state.auth;
  } catch (err) {
    els.status.textContent = "서버에 연결할 수 없습니다 (server unreachable)";
  }
  if (!state.model) {
    try {
      const models = await fetch("v1/models", { headers: headers() });
      if (models.ok) state.model = ((await models.json()).data || [{}])[0].id || null;
    } catch (_) { /* keep null: the server uses its own model */ }
  }
  els.model.textContent = state.model || "";
  await loadTasks();
  document.body.dataset.ready = "true";
})();
