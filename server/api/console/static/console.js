// console.js — the console's client: it fills the server-rendered pages from the public API, as any
// other client would (Bearer key from sessionStorage; no key on a server without keys). Plain
// JavaScript served as it is, so the console needs no build step.
const KEY = "qlora.apiKey";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const $ = (sel, root = document) => root.querySelector(sel);
const body = document.body;
const needsLogin = body.dataset.needsLogin === "true";

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API with the signed-in key; a non-2xx answer throws with the server's error message. */
async function api(path, opts = {}) {
  const headers = new Headers(opts.headers ?? {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.set("authorization", `Bearer ${key}`);
  const init = { ...opts, headers };
  if (opts.json !== undefined) {
    headers.set("content-type", "application/json");
    init.body = JSON.stringify(opts.json);
  }
  const res = await fetch(path, init);
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      const j = await res.json();
      if (j?.error?.message) message = j.error.message;
    } catch {
      // not JSON: the status line says what happened
    }
    if (res.status === 401 && needsLogin) showLogin(message);
    throw new ApiError(res.status, message);
  }
  return res;
}
const getJson = async (path) => await (await api(path)).json();

function showError(e) {
  $("#error").textContent = e ? String(e.message ?? e) : "";
}

/** Creates an element: el("td", {class: "x"}, "text", child). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}
const time = (s) => (s ? new Date(s * 1000).toLocaleString() : "");
const bytes = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);
const enc = encodeURIComponent;

function fillDl(dl, entries) {
  dl.replaceChildren(...entries.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "—")]));
}

// ---- sign-in ----

function showLogin(message) {
  $("#login").hidden = false;
  $("#login-error").textContent = message && sessionStorage.getItem(KEY) ? message : "";
  $("#api-key").focus();
}

async function signIn(e) {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("#api-key").value.trim());
  try {
    await api("/v1/models");
    location.reload();
  } catch (err) {
    sessionStorage.removeItem(KEY);
    $("#login").hidden = false;
    $("#login-error").textContent = err.message;
  }
}

/** Whether the key is an admin's: /metrics answers admins only. */
async function isAdmin() {
  try {
    await api("/metrics");
    return true;
  } catch {
    return false;
  }
}

// ---- shared pickers ----

async function models() {
  return (await getJson("/v1/models")).data;
}

function fillModelSelect(select, list, selected) {
  select.replaceChildren(...list.map((m) => el("option", { value: m.id, selected: m.id === selected }, m.id)));
}

// ---- jobs ----

async function jobsPage() {
  const [list, files] = await Promise.all([models(), getJson("/v1/files?limit=100")]);
  fillModelSelect($("#job-model"), list);
  const train = files.data.filter((f) => f.purpose === "fine-tune");
  $("#job-training-file").replaceChildren(...train.map((f) => el("option", { value: f.id }, `${f.filename} (${f.id})`)));
  $("#job-validation-file").replaceChildren(
    el("option", { value: "" }, "none"),
    ...train.map((f) => el("option", { value: f.id }, `${f.filename} (${f.id})`)),
  );
  $("#job-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const hp = {
      n_epochs: Number(f.get("n_epochs")),
      batch_size: Number(f.get("batch_size")),
      learning_rate: Number(f.get("learning_rate")),
      lora_r: Number(f.get("lora_r")),
    };
    if (f.get("max_seq_len")) hp.max_seq_len = Number(f.get("max_seq_len"));
    const req = {
      model: f.get("model"),
      training_file: f.get("training_file"),
      method: { type: "supervised", supervised: { hyperparameters: hp } },
    };
    if (f.get("validation_file")) req.validation_file = f.get("validation_file");
    if (f.get("suffix")) req.suffix = f.get("suffix");
    try {
      const job = await (await api("/v1/fine_tuning/jobs", { method: "POST", json: req })).json();
      location.href = `/console/jobs/${enc(job.id)}`;
    } catch (err) {
      showError(err);
    }
  });
  const refresh = async () => {
    const jobs = await getJson("/v1/fine_tuning/jobs?limit=100");
    $("#jobs-table tbody").replaceChildren(...jobs.data.map((j) =>
      el(
        "tr",
        {},
        el("td", {}, el("a", { href: `/console/jobs/${enc(j.id)}` }, j.id)),
        el("td", {}, j.organization_id),
        el("td", {}, j.model),
        el("td", { class: `status-${j.status}` }, j.status),
        el("td", {}, j.total_steps ? `${j.step} / ${j.total_steps}` : String(j.step)),
        el("td", {}, time(j.created_at)),
        el("td", {}, j.fine_tuned_model ?? ""),
      )
    ));
  };
  await refresh();
  setInterval(() => refresh().catch(showError), 3000);
}

/** The loss chart: uPlot draws 10,000+ points per series smoothly, so every step is kept. */
function lossChart(container) {
  const opts = {
    width: Math.max(300, container.clientWidth || 800),
    height: 300,
    scales: { x: { time: false } },
    series: [
      { label: "step" },
      { label: "training loss", stroke: "#2457c5", width: 1.5 },
      { label: "validation loss", stroke: "#c5246a", width: 1.5, spanGaps: true, points: { show: true, size: 5 } },
    ],
    axes: [{ label: "step" }, { label: "loss" }],
  };
  // deno-lint-ignore no-undef
  const plot = new uPlot(opts, [[], [], []], container);
  addEventListener("resize", () => plot.setSize({ width: Math.max(300, container.clientWidth), height: 300 }));
  return plot;
}

async function jobPage() {
  const id = body.dataset.jobId;
  const byStep = new Map(); // step -> [train_loss, valid_loss]
  let newestEvent = null;
  const events = [];
  const plot = lossChart($("#loss-plot"));

  /** New events since the last poll (pages newest-first until the newest one already seen). */
  async function newEvents() {
    const fresh = [];
    let after = null;
    for (;;) {
      const q = new URLSearchParams({ limit: "1000" });
      if (after) q.set("after", after);
      const page = await getJson(`/v1/fine_tuning/jobs/${enc(id)}/events?${q}`);
      let seen = false;
      for (const e of page.data) {
        if (e.id === newestEvent) {
          seen = true;
          break;
        }
        fresh.push(e);
      }
      if (seen || !page.has_more || page.data.length === 0) break;
      after = page.data[page.data.length - 1].id;
    }
    if (fresh.length) newestEvent = fresh[0].id;
    return fresh.reverse();
  }

  function draw() {
    const steps = [...byStep.keys()].sort((a, b) => a - b);
    const train = steps.map((s) => byStep.get(s)[0]);
    const valid = steps.map((s) => byStep.get(s)[1]);
    plot.setData([steps, train, valid]);
    $("#loss-chart").dataset.points = String(steps.length);
    const last = steps.length ? byStep.get(steps[steps.length - 1]) : null;
    $("#loss-latest").textContent = last
      ? `(step ${steps[steps.length - 1]}: training loss ${last[0]?.toFixed(4) ?? "—"}${
        last[1] != null ? `, validation loss ${last[1].toFixed(4)}` : ""
      })`
      : "(no steps yet)";
  }

  async function poll() {
    const job = await getJson(`/v1/fine_tuning/jobs/${enc(id)}`);
    fillDl($("#job-summary"), [
      ["Status", job.status],
      ["Owner", job.organization_id],
      ["Base model", job.model],
      ["Progress", job.total_steps ? `${job.step} / ${job.total_steps} steps` : `${job.step} steps`],
      ["Training file", job.training_file],
      ["Validation file", job.validation_file],
      ["Created", time(job.created_at)],
      ["Estimated finish", time(job.estimated_finish)],
      ["Finished", time(job.finished_at)],
      ["Fine-tuned model", job.fine_tuned_model],
      ["Error", job.error ? `${job.error.code}: ${job.error.message}` : null],
    ]);
    const hp = job.method?.[job.method.type]?.hyperparameters ?? job.hyperparameters;
    fillDl($("#hyperparameters"), [["method", job.method?.type], ...Object.entries(hp).map(([k, v]) => [k, JSON.stringify(v)])]);
    const cancel = $("#cancel-job");
    cancel.hidden = TERMINAL.has(job.status);
    const open = $("#open-playground");
    if (job.fine_tuned_model) {
      open.hidden = false;
      open.href = `/console/playground?model=${enc(job.fine_tuned_model)}&compare=${enc(job.model)}`;
    }

    const fresh = await newEvents();
    let metrics = 0;
    for (const e of fresh) {
      events.unshift(e);
      const d = e.data;
      if (e.type === "metrics" && d && typeof d.step === "number") {
        const prev = byStep.get(d.step) ?? [null, null];
        byStep.set(d.step, [d.train_loss ?? prev[0], d.valid_loss ?? prev[1]]);
        metrics++;
      }
    }
    if (metrics || byStep.size === 0) draw();
    // the list shows the newest 200 events; the chart holds every step
    if (fresh.length) {
      $("#events").replaceChildren(
        ...events.slice(0, 200).map((e) =>
          el(
            "li",
            { class: `level-${e.level}` },
            el("time", { datetime: new Date(e.created_at * 1000).toISOString() }, time(e.created_at)),
            ` ${e.level}: ${e.message}`,
          )
        ),
      );
    }

    const cps = await getJson(`/v1/fine_tuning/jobs/${enc(id)}/checkpoints?limit=100`);
    $("#checkpoints-table tbody").replaceChildren(...cps.data.map((c) =>
      el(
        "tr",
        {},
        el("td", {}, c.step_number),
        el("td", {}, el("code", {}, c.fine_tuned_model_checkpoint)),
        el("td", {}, Object.entries(c.metrics).map(([k, v]) => `${k}=${Number(v).toPrecision(4)}`).join(", ")),
        el(
          "td",
          {},
          el(
            "a",
            { href: `/console/playground?model=${enc(c.fine_tuned_model_checkpoint)}&compare=${enc(job.model)}` },
            "Open in playground",
          ),
        ),
      )
    ));
    return job;
  }

  $("#cancel-job").addEventListener("click", async () => {
    try {
      await api(`/v1/fine_tuning/jobs/${enc(id)}/cancel`, { method: "POST" });
      await poll();
    } catch (err) {
      showError(err);
    }
  });

  // polling (one second while the job is live) rather than SSE: the API's events are pages, and a
  // poll that asks only for what is new costs one small request
  const loop = async () => {
    try {
      const job = await poll();
      if (!TERMINAL.has(job.status)) setTimeout(loop, 1000);
    } catch (err) {
      showError(err);
      setTimeout(loop, 3000);
    }
  };
  await loop();
}

// ---- files ----

async function filesPage() {
  const refresh = async () => {
    const files = await getJson("/v1/files?limit=100");
    $("#files-table tbody").replaceChildren(...files.data.map((f) =>
      el(
        "tr",
        {},
        el("td", {}, f.id),
        el("td", {}, f.filename),
        el("td", {}, f.purpose),
        el("td", {}, f.bytes),
        el("td", {}, time(f.created_at)),
        el(
          "td",
          {},
          el("button", {
            type: "button",
            "aria-label": `Delete ${f.filename}`,
            onclick: async () => {
              try {
                await api(`/v1/files/${enc(f.id)}`, { method: "DELETE" });
                await refresh();
              } catch (err) {
                showError(err);
              }
            },
          }, "Delete"),
        ),
      )
    ));
  };
  $("#upload-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("#upload-error");
    out.replaceChildren();
    const file = $("#upload-file").files[0];
    if (!file) return;
    const form = new FormData();
    form.set("purpose", $("#upload-purpose").value);
    form.set("file", file, file.name);
    try {
      await api("/v1/files", { method: "POST", body: form });
      e.target.reset();
      await refresh();
    } catch (err) {
      // the server validates every line and names the bad one: show that line beside its message
      out.append(el("p", {}, err.message));
      const m = /line (\d+)/.exec(err.message);
      if (m) {
        const line = (await file.text()).split("\n")[Number(m[1]) - 1];
        if (line !== undefined) out.append(el("pre", { class: "bad-line" }, `${m[1]}: ${line.slice(0, 500)}`));
      }
    }
  });
  await refresh();
}

// ---- models and adapters ----

async function modelsPage() {
  const refresh = async () => {
    const [list, adapters] = await Promise.all([models(), getJson("/v1/adapters")]);
    const byId = new Map(adapters.data.map((a) => [a.id, a]));
    // an admin's adapter list holds every tenant's; show those its model list leaves out too
    const listed = new Set(list.map((m) => m.id));
    for (const a of adapters.data) if (!listed.has(a.id)) list.push({ id: a.id, owned_by: a.owner, parent: a.base_model });
    const action = (label, id, fn) =>
      el("button", {
        type: "button",
        "aria-label": `${label} ${id}`,
        onclick: async () => {
          try {
            showError(null);
            await fn();
            await refresh();
          } catch (err) {
            showError(err);
          }
        },
      }, label);
    $("#models-table tbody").replaceChildren(...list.map((m) => {
      const a = byId.get(m.id);
      const base = !m.parent && !a;
      return el(
        "tr",
        { "data-model": m.id },
        el("td", {}, el("code", {}, m.id)),
        el("td", {}, a?.owner ?? m.owned_by),
        el("td", {}, base ? "(base model)" : m.parent ?? a?.base_model ?? ""),
        el("td", {}, a ? a.r : ""),
        el("td", {}, a ? a.target_modules.join(", ") : ""),
        el("td", {}, a ? bytes(a.device_bytes) : ""),
        el("td", { class: "resident" }, base ? "yes" : a ? (a.resident ? "yes" : "no") : ""),
        el(
          "td",
          {},
          ...(a
            ? [
              a.resident
                ? action("Unload", m.id, () => api(`/v1/adapters/${enc(m.id)}/unload`, { method: "POST" }))
                : action("Load", m.id, () => api(`/v1/adapters/${enc(m.id)}/load`, { method: "POST" })),
              " ",
              action("Delete", m.id, async () => {
                if (confirm(`Delete ${m.id}?`)) await api(`/v1/models/${enc(m.id)}`, { method: "DELETE" });
              }),
              " ",
            ]
            : []),
          el("a", { href: `/console/playground?model=${enc(m.id)}` }, "Playground"),
        ),
      );
    }));
  };
  await refresh();
}

// ---- playground ----

/** Reads an SSE response's data payloads as they arrive. */
async function* sse(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of block.split("\n")) if (line.startsWith("data: ")) yield line.slice(6);
    }
  }
}

async function playgroundPage() {
  const params = new URLSearchParams(location.search);
  const list = await models();
  fillModelSelect($("#model-a"), list, params.get("model") ?? list[0]?.id);
  fillModelSelect($("#model-b"), list, params.get("compare") ?? list[0]?.id);
  if (params.get("compare")) $("#play-compare").checked = true;
  const compare = () => ($("#pane-b").hidden = !$("#play-compare").checked);
  compare();
  $("#play-compare").addEventListener("change", compare);

  const request = (model) => {
    const f = new FormData($("#play-form"));
    const prompt = String(f.get("prompt"));
    const r = { model };
    if (f.get("endpoint") === "chat") r.messages = [{ role: "user", content: prompt }];
    else r.prompt = prompt;
    r.temperature = Number(f.get("temperature"));
    r.top_p = Number(f.get("top_p"));
    r.max_tokens = Number(f.get("max_tokens"));
    if (f.get("seed") !== "") r.seed = Number(f.get("seed"));
    r.stream = true;
    return { path: f.get("endpoint") === "chat" ? "/v1/chat/completions" : "/v1/completions", body: r };
  };

  const snippet = () => {
    const { path, body: r } = request($("#model-a").value);
    const auth = sessionStorage.getItem(KEY) ? ` \\\n  -H "authorization: Bearer $QLORA_API_KEY"` : "";
    $("#snippet-curl").textContent = `curl -N ${location.origin}${path}${auth} \\\n  -H 'content-type: application/json' \\\n  -d '${
      JSON.stringify(r).replaceAll("'", "'\\''")
    }'`;
    const resource = path.endsWith("chat/completions") ? "chat.completions" : "completions";
    const text = path.endsWith("chat/completions") ? "chunk.choices[0]?.delta.content" : "chunk.choices[0]?.text";
    $("#snippet-sdk").textContent = `import { QloraClient } from "@qlora/sdk";

const client = new QloraClient({ baseURL: "${location.origin}/v1"${
      sessionStorage.getItem(KEY) ? ', apiKey: Deno.env.get("QLORA_API_KEY")' : ""
    } });
const stream = await client.${resource}.create(${JSON.stringify(r, null, 2)});
for await (const chunk of stream) console.log(${text} ?? "");`;
  };
  $("#play-form").addEventListener("input", snippet);
  $("#play-form").addEventListener("change", snippet);
  snippet();

  let controller = null;
  async function run(side) {
    const out = $(`#out-${side}`), stats = $(`#stats-${side}`);
    const { path, body: r } = request($(`#model-${side}`).value);
    out.textContent = "";
    stats.textContent = "";
    out.setAttribute("aria-busy", "true");
    const t0 = performance.now();
    let chunks = 0;
    try {
      const res = await api(path, { method: "POST", json: r, signal: controller.signal });
      for await (const data of sse(res)) {
        if (data === "[DONE]") break;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        const c = j.choices?.[0];
        const piece = c?.delta?.content ?? c?.text ?? "";
        if (piece) {
          out.textContent += piece;
          chunks++;
        }
        if (c?.finish_reason) stats.textContent = `finish: ${c.finish_reason}`;
      }
      const s = (performance.now() - t0) / 1000;
      stats.textContent += `${stats.textContent ? "; " : ""}${chunks} chunks in ${s.toFixed(2)} s`;
    } catch (err) {
      stats.textContent = err.name === "AbortError" ? "stopped" : `error: ${err.message}`;
    } finally {
      out.setAttribute("aria-busy", "false");
    }
  }
  $("#play-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    controller = new AbortController();
    $("#play-send").disabled = true;
    $("#play-stop").disabled = false;
    await Promise.all($("#play-compare").checked ? [run("a"), run("b")] : [run("a")]);
    $("#play-send").disabled = false;
    $("#play-stop").disabled = true;
  });
  $("#play-stop").addEventListener("click", () => controller?.abort());
}

// ---- server ----

/** Prometheus text → {name{labels}: value}. */
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

async function serverPage(admin) {
  let last = null;
  const refresh = async () => {
    const health = await (await fetch("/health")).json();
    fillDl($("#health"), [
      ["Status", health.status],
      ["Model", health.model],
      ["Backend", `${health.backend}${health.native ? ` (${JSON.stringify(health.native)})` : ""}`],
      ["Running sequences", health.running],
      ["Waiting (queue)", health.waiting],
    ]);
    const m = await getJson(`/v1/models/${enc(health.model)}`);
    const mem = m.memory ?? {};
    fillDl($("#memory"), [
      ["Quantization", m.quantization],
      ["4-bit codes", mem.quantized_weight_bytes != null ? bytes(mem.quantized_weight_bytes) : null],
      ["Quantization constants", mem.quantization_constant_bytes != null ? bytes(mem.quantization_constant_bytes) : null],
      ["Unquantized tensors", mem.unquantized_bytes != null ? bytes(mem.unquantized_bytes) : null],
      ["KV cache", mem.kv_cache_bytes != null ? `${bytes(mem.kv_cache_bytes)} (${mem.kv_cache_tokens ?? "?"} tokens)` : null],
      ["Resident adapters", mem.resident_adapter_bytes != null ? bytes(mem.resident_adapter_bytes) : null],
      ["Total", mem.total_bytes != null ? bytes(mem.total_bytes) : null],
      ["Bits per quantized parameter", mem.bits_per_quantized_parameter?.toFixed(3)],
    ]);
    if (!admin) {
      $("#metrics-note").textContent = "Batch size and tokens per second come from /metrics, which needs an admin key.";
      return;
    }
    const now = performance.now();
    const p = parseMetrics(await (await api("/metrics")).text());
    const tokens = p.get("qlora_generation_tokens_total") ?? 0;
    const rate = last ? ((tokens - last.tokens) / ((now - last.t) / 1000)).toFixed(1) : "…";
    last = { tokens, t: now };
    const bs = p.get("qlora_batch_size_count") ? (p.get("qlora_batch_size_sum") / p.get("qlora_batch_size_count")).toFixed(2) : "—";
    fillDl($("#metrics"), [
      ["Mean batch size (sequences per step)", bs],
      ["Generated tokens per second (now)", rate],
      ["Generated tokens (total)", tokens],
      ["Running", p.get("qlora_num_requests_running")],
      ["Waiting", p.get("qlora_num_requests_waiting")],
      ["KV cache usage", p.has("vllm:gpu_cache_usage_perc") ? `${(p.get("vllm:gpu_cache_usage_perc") * 100).toFixed(1)}%` : null],
      ["Resident adapters", p.get("qlora_resident_adapters")],
    ]);
  };
  await refresh();
  setInterval(() => refresh().catch(showError), 2000);
}

// ---- start ----

async function main() {
  $("#login-form").addEventListener("submit", signIn);
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  if (needsLogin && !sessionStorage.getItem(KEY)) {
    showLogin();
    return;
  }
  const admin = await isAdmin();
  $("#who").textContent = needsLogin ? `Signed in${admin ? " (admin: every tenant)" : ""}` : "Local server (no keys)";
  $("#logout").hidden = !needsLogin;
  const pages = { jobs: jobsPage, job: jobPage, files: filesPage, models: modelsPage, playground: playgroundPage, server: serverPage };
  await pages[body.dataset.page](admin);
  body.dataset.ready = "true";
}

main().catch(showError);
