// EPAS Serve playground: plain JavaScript, no dependencies. Talks to this server only:
// GET /info for the model and its sharing plans, POST /v1/completions and
// /v1/chat/completions with `stream: true`, read with fetch + ReadableStream; optionally
// with a `response_format` (JSON object or JSON Schema) and, in chat, `tools`.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "epas-playground-api-key";

const state = {
  info: null, // the `model` object of GET /info
  apiKey: sessionStorage.getItem(KEY_STORAGE) || "",
  sharingLayers: 0,
  history: [], // chat turns {role, content}
  controllers: [], // AbortControllers of the requests in flight
  running: false,
  stopped: false,
};

// ---------------------------------------------------------------- helpers

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c);
  return node;
}

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", Boolean(isError));
}

function setMessage(id, text, kind) {
  const m = $(id);
  m.textContent = text || "";
  m.className = "message" + (kind ? " " + kind : "");
}

function authHeaders() {
  const h = { "content-type": "application/json" };
  if (state.apiKey) h.authorization = "Bearer " + state.apiKey;
  return h;
}

function fmtRatio(r) {
  return r.toFixed(2);
}

function fmtBytes(n) {
  return n.toLocaleString("en-US") + " B";
}

function plan(k) {
  return state.info.plans[k];
}

function planLabel(k) {
  const p = plan(k);
  return `${fmtRatio(p.sharing_ratio)} (${k}/${state.info.num_layers} share)`;
}

// The ratio a request sends for k sharing layers: k / L maps back to exactly k on the server.
function ratioFor(k) {
  return k / state.info.num_layers;
}

// ---------------------------------------------------------------- model info

async function loadInfo() {
  let body;
  try {
    const response = await fetch("/info", { headers: authHeaders(), cache: "no-store" });
    body = await response.json();
  } catch (e) {
    setStatus("Cannot reach the server: " + e.message, true);
    setTimeout(loadInfo, 2000);
    return;
  }
  if (body.api_key_required) {
    $("key-panel").hidden = false;
    if (!body.authorized) {
      setStatus(state.apiKey ? "That API key was refused." : "This server needs an API key.", true);
      setMessage("key-message", state.apiKey ? "The server refused this key." : "", state.apiKey ? "error" : "");
      $("generate").disabled = true;
      $("api-key").focus();
      return;
    }
    setMessage("key-message", "Key accepted.", "ok");
  }
  if (body.status === "loading" || !body.model) {
    setStatus("The model is loading…");
    setTimeout(loadInfo, 1000);
    return;
  }
  if (body.status === "draining") {
    setStatus("The server is shutting down.", true);
    return;
  }
  state.info = body.model;
  showModel();
  setStatus(`Ready: ${state.info.id}`);
  $("generate").disabled = state.running;
}

function showModel() {
  const m = state.info;
  $("model-name").textContent = m.id;
  $("model-layers").textContent = String(m.num_layers);
  $("model-trained").textContent = m.epas_trained
    ? `${fmtRatio(m.trained_sharing_ratio)} (${m.trained_sharing_layers} layers)`
    : "0 (not EPAS-trained)";
  $("model-max").textContent =
    `${fmtRatio(m.max_sharing_ratio)} (${m.max_sharing_layers} layers)` +
    (m.allow_untrained_sharing && m.max_sharing_layers > (m.trained_sharing_layers || 0) ? ", forced beyond trained" : "");
  $("model-weights").textContent = m.weights;
  $("model-context").textContent = `${m.max_model_len.toLocaleString("en-US")} tokens`;

  const slider = $("ratio");
  slider.max = String(m.max_sharing_layers);
  slider.disabled = m.max_sharing_layers === 0;
  const initial = Math.min(
    m.max_sharing_layers,
    Math.floor(m.default_sharing_ratio * m.num_layers + 1e-9),
  );
  setSharing(initial);

  const presets = $("presets");
  presets.replaceChildren();
  const seen = new Set();
  for (const r of [0, 0.25, 0.5, 0.75]) {
    const k = Math.floor(r * m.num_layers + 1e-9);
    if (k > m.max_sharing_layers || seen.has(k)) continue;
    seen.add(k);
    const b = el("button", { type: "button", text: String(r), "data-k": String(k) });
    b.setAttribute("aria-label", `ratio ${r}: ${k} sharing layers`);
    b.addEventListener("click", () => setSharing(k));
    presets.append(b);
  }
  updatePresets();
  fillCompareSelects();
}

// ---------------------------------------------------------------- sharing control and diagram

function setSharing(k) {
  state.sharingLayers = k;
  $("ratio").value = String(k);
  renderPlan();
}

function updatePresets() {
  for (const b of $("presets").querySelectorAll("button")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.k) === state.sharingLayers));
  }
}

function renderPlan() {
  const m = state.info;
  const k = state.sharingLayers;
  const p = plan(k);
  const L = m.num_layers;
  const base = plan(0).kv_cache_bytes_per_token;
  $("ratio-value").textContent = `${k} of ${L} (ratio ${fmtRatio(p.sharing_ratio)})`;
  $("ratio").setAttribute(
    "aria-valuetext",
    `${k} sharing layers, ratio ${fmtRatio(p.sharing_ratio)}` +
      (p.source_layer === null ? "" : `, source layer ${p.source_layer}`),
  );
  const saved = base - p.kv_cache_bytes_per_token;
  $("plan-text").textContent =
    k === 0
      ? `Every layer computes its own Q and K. KV cache: ${fmtBytes(base)} per token.`
      : `Layers ${p.first_sharing_layer}–${L - 1} reuse Q, K and the attention of source layer ${p.source_layer}. ` +
        `KV cache: ${fmtBytes(p.kv_cache_bytes_per_token)} per token ` +
        `(${Math.round((100 * p.kv_cache_bytes_per_token) / base)}% of ratio 0; K cache saves ${fmtBytes(saved)}).` +
        (p.trained ? "" : " Untrained sharing: quality drops.");

  const layers = $("layers");
  layers.replaceChildren();
  for (let i = 0; i < L; i++) {
    let kind = i >= p.first_sharing_layer ? "share" : "compute";
    if (i === p.source_layer) kind = "source";
    const d = el("div", { class: `layer ${kind}`, text: String(i), "data-layer": String(i), "data-mode": kind });
    d.title =
      kind === "share"
        ? `layer ${i}: sharing (Q/K from layer ${p.source_layer})`
        : kind === "source"
          ? `layer ${i}: source (computes Q/K for ${k} sharing layers)`
          : `layer ${i}: compute`;
    layers.append(d);
  }
  layers.setAttribute(
    "aria-label",
    k === 0
      ? `${L} layers, all compute`
      : `${L} layers: 0 to ${p.source_layer} compute, layer ${p.source_layer} is the source, ` +
          `${p.first_sharing_layer} to ${L - 1} share`,
  );
  updatePresets();
}

// ---------------------------------------------------------------- compare selects

function fillCompareSelects() {
  const m = state.info;
  const ks = [...Array(m.max_sharing_layers + 1).keys()];
  const defaults = [0, Math.floor(0.25 * m.num_layers + 1e-9), Math.floor(0.5 * m.num_layers + 1e-9)];
  ["compare-a", "compare-b", "compare-c"].forEach((id, i) => {
    const s = $(id);
    s.replaceChildren();
    if (i === 2) s.append(el("option", { value: "", text: "none" }));
    for (const k of ks) s.append(el("option", { value: String(k), text: `${fmtRatio(plan(k).sharing_ratio)} (${k})` }));
    const want = defaults[i];
    s.value = want <= m.max_sharing_layers ? String(want) : i === 2 ? "" : String(Math.min(want, m.max_sharing_layers));
  });
  const only = m.max_sharing_layers === 0;
  $("compare").disabled = only;
  if (only) $("compare").parentElement.title = "This server serves only ratio 0 (start it with --allow-untrained-sharing or an EPAS-trained model).";
}

function compareRatios() {
  const out = [];
  for (const id of ["compare-a", "compare-b", "compare-c"]) {
    const v = $(id).value;
    if (v !== "" && !out.includes(Number(v))) out.push(Number(v));
  }
  return out;
}

// ---------------------------------------------------------------- streaming

// Yields the `data:` payload of every server-sent event of a fetch response.
async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) yield data;
    }
  }
}

// Speed figures of one stream: time to first token and decode tokens/s (tokens after the
// first over the time since the first), from the client's clock.
class Speed {
  constructor() {
    this.start = performance.now();
    this.first = null;
    this.last = null;
    this.tokens = 0;
    this.exact = false;
  }
  token(n) {
    const now = performance.now();
    if (this.first === null) this.first = now;
    this.last = now;
    this.tokens += n;
  }
  ttftMs() {
    return this.first === null ? null : this.first - this.start;
  }
  tokensPerSecond() {
    if (this.first === null || this.tokens < 2) return null;
    const end = this.exact ? this.last : performance.now();
    const s = (end - this.first) / 1000;
    return s > 0 ? (this.tokens - 1) / s : null;
  }
}

// A JSON text field parsed, or an Error naming the field.
function parseJsonField(id, what) {
  try {
    return JSON.parse($(id).value);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${e.message}`);
  }
}

// The request fields of the Output box: `response_format`, and `tools` / `tool_choice` in chat.
function outputFields(chat) {
  const fields = {};
  const format = $("output-format").value;
  if (format === "json_object") fields.response_format = { type: "json_object" };
  if (format === "json_schema") {
    fields.response_format = {
      type: "json_schema",
      json_schema: { name: "playground", schema: parseJsonField("json-schema", "The JSON Schema"), strict: true },
    };
  }
  if (chat && $("use-tools").checked) {
    const tools = parseJsonField("tools", "Tools");
    if (!Array.isArray(tools)) throw new Error("Tools must be a JSON array.");
    fields.tools = tools;
    fields.tool_choice = $("tool-choice").value;
  }
  return fields;
}

function requestBody(k, chatMessages, promptText) {
  const body = {
    model: state.info.id,
    stream: true,
    stream_options: { include_usage: true },
    sharing_ratio: ratioFor(k),
    max_tokens: Math.max(1, Math.min(4096, Number($("max-tokens").value) || 128)),
    temperature: Math.max(0, Math.min(2, Number($("temperature").value) || 0)),
  };
  if (chatMessages) body.messages = chatMessages;
  else body.prompt = promptText;
  return Object.assign(body, outputFields(Boolean(chatMessages)));
}

// Runs one streamed request; `view` gets text and speed updates. Resolves to the final text.
async function stream(endpoint, body, view) {
  const controller = new AbortController();
  state.controllers.push(controller);
  const speed = new Speed();
  let text = "";
  const calls = []; // tool calls by index: {id, name, arguments}
  try {
    const response = await fetch(endpoint, {
      method: "POST",
      headers: authHeaders(),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        message = (await response.json()).error.message || message;
      } catch (_) {
        /* not JSON */
      }
      if (response.status === 401) {
        $("key-panel").hidden = false;
        $("api-key").focus();
      }
      throw new Error(message);
    }
    for await (const data of sseData(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.epas) view.epas(chunk.epas);
      if (chunk.usage) {
        speed.tokens = chunk.usage.completion_tokens;
        speed.exact = true;
      }
      for (const choice of chunk.choices || []) {
        const piece = choice.text ?? choice.delta?.content ?? "";
        if (piece) {
          speed.token(1);
          text += piece;
          view.text(text);
        }
        for (const call of choice.delta?.tool_calls || []) {
          const known = (calls[call.index] ||= { id: "", name: "", arguments: "" });
          known.id = call.id || known.id;
          known.name += call.function?.name || "";
          known.arguments += call.function?.arguments || "";
          view.toolCalls(calls.filter(Boolean));
        }
      }
      view.speed(speed, false);
    }
    view.speed(speed, true);
    return { text, speed, calls };
  } catch (e) {
    if (e.name === "AbortError") {
      view.speed(speed, true);
      return { text, speed, calls, aborted: true };
    }
    throw e;
  } finally {
    state.controllers = state.controllers.filter((c) => c !== controller);
  }
}

function showSpeed(targets, speed, done) {
  const ttft = speed.ttftMs();
  const tps = speed.tokensPerSecond();
  targets.ttft.textContent = ttft === null ? "–" : `${Math.round(ttft)} ms`;
  targets.tps.textContent = tps === null ? "–" : tps.toFixed(1);
  targets.tokens.textContent = String(speed.tokens) + (done ? "" : "…");
  targets.tps.dataset.value = tps === null ? "" : String(tps);
  targets.tps.dataset.done = String(done);
}

// The tool calls of an answer, as a list after its text (arguments as the model wrote them).
function showToolCalls(container, calls) {
  let list = container.querySelector(":scope > .tool-calls");
  if (!list) {
    list = el("ul", { class: "tool-calls", "aria-label": "Tool calls" });
    container.append(list);
  }
  list.replaceChildren(
    ...calls.map((c) =>
      el("li", { class: "tool-call", "data-name": c.name, "data-arguments": c.arguments },
        el("span", { class: "fn", text: c.name }), `(${c.arguments})`),
    ),
  );
}

// ---------------------------------------------------------------- single request

function turnNode(role, text) {
  const gen = el("span", { class: "generated", text });
  return el("div", { class: `turn ${role}` }, el("span", { class: "who", text: role }), gen);
}

function renderTranscript() {
  const out = $("output");
  out.replaceChildren();
  const system = $("system").value.trim();
  if (system) out.append(turnNode("system", system));
  for (const t of state.history) out.append(turnNode(t.role, t.content));
}

function chatMessages(userText) {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  return messages.concat(state.history, [{ role: "user", content: userText }]);
}

async function runSingle(mode, promptText) {
  const k = state.sharingLayers;
  const out = $("output");
  const targets = { ttft: $("ttft"), tps: $("tps"), tokens: $("tokens") };
  $("used-ratio").textContent = fmtRatio(plan(k).sharing_ratio);
  let gen;
  let endpoint;
  let body;
  if (mode === "chat") {
    const messages = chatMessages(promptText);
    body = requestBody(k, messages, null);
    state.history.push({ role: "user", content: promptText });
    renderTranscript();
    const turn = turnNode("assistant", "");
    out.append(turn);
    gen = turn.querySelector(".generated");
    endpoint = "/v1/chat/completions";
    $("prompt").value = "";
  } else {
    endpoint = "/v1/completions";
    body = requestBody(k, null, promptText);
    out.replaceChildren(el("span", { class: "prompt-echo", text: promptText }));
    gen = el("span", { class: "generated" });
    out.append(gen);
  }
  gen.classList.add("streaming");
  const view = {
    text: (t) => {
      gen.textContent = t;
      out.scrollTop = out.scrollHeight;
    },
    speed: (s, done) => showSpeed(targets, s, done),
    epas: (e) => {
      $("used-ratio").textContent = `${fmtRatio(e.effective_sharing_ratio)} (${e.sharing_layers} share)`;
    },
    toolCalls: (calls) => showToolCalls(gen.parentElement, calls),
  };
  try {
    const result = await stream(endpoint, body, view);
    if (mode === "chat") {
      // Calls stay in the transcript as text: the playground runs no tools to answer them.
      const calls = result.calls.filter(Boolean).map((c) => `${c.name}(${c.arguments})`);
      state.history.push({ role: "assistant", content: [result.text, ...calls].filter(Boolean).join("\n") });
    }
    const tps = result.speed.tokensPerSecond();
    setStatus(
      `${result.aborted ? "Stopped" : "Done"}: ${result.speed.tokens} tokens` +
        (tps === null ? "" : `, ${tps.toFixed(1)} tokens/s`) +
        ` at ratio ${fmtRatio(plan(k).sharing_ratio)}.`,
    );
  } finally {
    gen.classList.remove("streaming");
  }
}

// ---------------------------------------------------------------- compare

async function runCompare(mode, promptText) {
  const ks = compareRatios();
  const grid = $("compare-grid");
  grid.replaceChildren();
  const columns = ks.map((k) => {
    const stats = el("dl", { class: "stats" });
    const cell = (name) => {
      const dd = el("dd", { text: "–" });
      stats.append(el("div", {}, el("dt", { text: name }), dd));
      return dd;
    };
    const targets = { ttft: cell("TTFT"), tps: cell("Tokens/s"), tokens: cell("Tokens") };
    const gen = el("span", { class: "generated" });
    const relative = el("p", { class: "relative" });
    const col = el(
      "article",
      { class: "compare-col", "data-k": String(k), "aria-label": `Ratio ${planLabel(k)}` },
      el("h3", { text: `Ratio ${planLabel(k)}` }),
      stats,
      relative,
      el("div", { class: "transcript", tabindex: 0 }, gen),
    );
    grid.append(col);
    return { k, col, gen, targets, relative, result: null };
  });
  const messages = mode === "chat" ? chatMessages(promptText) : null;
  const endpoint = mode === "chat" ? "/v1/chat/completions" : "/v1/completions";
  const one = async (c) => {
    c.gen.classList.add("streaming");
    const view = {
      text: (t) => (c.gen.textContent = t),
      speed: (s, done) => showSpeed(c.targets, s, done),
      epas: () => {},
      toolCalls: (calls) => showToolCalls(c.gen.parentElement, calls),
    };
    try {
      c.result = await stream(endpoint, requestBody(c.k, messages, promptText), view);
    } finally {
      c.gen.classList.remove("streaming");
    }
  };
  if ($("compare-together").checked) {
    await Promise.all(columns.map(one));
  } else {
    for (const c of columns) {
      if (state.stopped) break;
      await one(c);
      if (c.result && c.result.aborted) break;
    }
  }
  // Relative speeds against the first column.
  const speeds = columns.map((c) => (c.result ? c.result.speed.tokensPerSecond() : null));
  const base = speeds[0];
  let best = -1;
  speeds.forEach((s, i) => {
    if (s !== null && (best < 0 || s > speeds[best])) best = i;
  });
  columns.forEach((c, i) => {
    const s = speeds[i];
    c.relative.textContent =
      s === null || !base ? "" : i === 0 ? "baseline" : `×${(s / base).toFixed(2)} tokens/s vs ${fmtRatio(plan(columns[0].k).sharing_ratio)}`;
    c.col.classList.toggle("fastest", i === best && columns.length > 1);
  });
  setStatus(
    "Compared: " +
      columns
        .map((c, i) => `${fmtRatio(plan(c.k).sharing_ratio)} → ${speeds[i] === null ? "–" : speeds[i].toFixed(1)} tok/s`)
        .join(", ") +
      ".",
  );
}

// ---------------------------------------------------------------- wiring

function mode() {
  return $("mode-chat").checked ? "chat" : "prompt";
}

function setRunning(running) {
  state.running = running;
  $("generate").disabled = running || !state.info;
  $("stop").disabled = !running;
  $("gen-form").setAttribute("aria-busy", String(running));
}

async function submit() {
  if (state.running || !state.info) return;
  const promptText = $("prompt").value;
  if (!promptText.trim()) {
    setMessage("request-message", mode() === "chat" ? "Write a message first." : "Write a prompt first.", "error");
    $("prompt").focus();
    return;
  }
  setMessage("request-message", "");
  const comparing = $("compare").checked;
  $("single").hidden = comparing;
  $("compare-grid").hidden = !comparing;
  state.stopped = false;
  setRunning(true);
  // On a phone the output is below the form: bring it into view (focus stays in the form).
  if (window.matchMedia("(max-width: 860px)").matches) $("output-panel").scrollIntoView({ block: "start" });
  setStatus(comparing ? "Comparing ratios…" : "Generating…");
  try {
    if (comparing) await runCompare(mode(), promptText);
    else await runSingle(mode(), promptText);
  } catch (e) {
    setMessage("request-message", e.message, "error");
    setStatus("Request failed.", true);
  } finally {
    setRunning(false);
  }
}

function stop() {
  state.stopped = true;
  for (const c of state.controllers) c.abort();
}

function onModeChange() {
  const chat = mode() === "chat";
  $("system-row").hidden = !chat;
  $("chat-hint").hidden = !chat;
  $("prompt-label").textContent = chat ? "Message" : "Prompt";
  $("generate").textContent = chat ? "Send" : "Generate";
  $("tools-row").hidden = !chat;
  state.history = [];
  $("output").replaceChildren();
  if (chat && $("prompt").value.startsWith("Mr. Speaker")) $("prompt").value = "Name three rivers in Europe.";
}

function init() {
  if (state.apiKey) $("api-key").value = state.apiKey;
  $("ratio").addEventListener("input", (e) => setSharing(Number(e.target.value)));
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.apiKey = $("api-key").value.trim();
    if (state.apiKey) sessionStorage.setItem(KEY_STORAGE, state.apiKey);
    else sessionStorage.removeItem(KEY_STORAGE);
    loadInfo();
  });
  $("gen-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  $("gen-form").addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.isComposing) return;
    const inPrompt = e.target === $("prompt");
    if (e.ctrlKey || e.metaKey || (inPrompt && mode() === "chat" && !e.shiftKey)) {
      e.preventDefault();
      submit();
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.running) stop();
  });
  $("stop").addEventListener("click", stop);
  $("clear").addEventListener("click", () => {
    state.history = [];
    $("output").replaceChildren();
    $("compare-grid").replaceChildren();
    for (const id of ["ttft", "tps", "tokens", "used-ratio"]) $(id).textContent = "–";
    setMessage("request-message", "");
  });
  for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener("change", onModeChange);
  $("output-format").addEventListener("change", () => {
    $("schema-row").hidden = $("output-format").value !== "json_schema";
  });
  $("use-tools").addEventListener("change", () => {
    $("tools-options").hidden = !$("use-tools").checked;
  });
  $("compare").addEventListener("change", () => {
    $("compare-options").hidden = !$("compare").checked;
    $("single").hidden = $("compare").checked;
    $("compare-grid").hidden = !$("compare").checked;
  });
  loadInfo();
}

init();
