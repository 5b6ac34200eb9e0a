// pages.tsx — the console's pages, rendered by Hono's JSX: semantic HTML shells (landmarks, labels,
// tables with captions) that static/console.js fills from the public API with the user's key. The
// server puts no tenant data in them, so the console sees exactly what the key's owner may see.
import type { Child } from "hono/jsx";

export type PageName = "jobs" | "job" | "files" | "models" | "playground" | "server";

const NAV: [PageName, string, string][] = [
  ["jobs", "/console/jobs", "Fine-tuning"],
  ["files", "/console/files", "Files"],
  ["models", "/console/models", "Models & adapters"],
  ["playground", "/console/playground", "Playground"],
  ["server", "/console/server", "Server"],
];

function Layout(props: { page: PageName; title: string; needsLogin: boolean; data?: Record<string, string>; children: Child }) {
  const data: Record<string, string> = {};
  for (const [k, v] of Object.entries(props.data ?? {})) data[`data-${k}`] = v;
  const current = props.page === "job" ? "jobs" : props.page;
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{props.title} · qlora console</title>
        <link rel="stylesheet" href="/console/assets/uplot.css" />
        <link rel="stylesheet" href="/console/assets/console.css" />
      </head>
      <body data-page={props.page} data-needs-login={String(props.needsLogin)} {...data}>
        <a class="skip" href="#main">Skip to content</a>
        <header>
          <nav aria-label="Console">
            <a class="brand" href="/">qlora console</a>
            <ul>
              {NAV.map(([page, href, label]) => (
                <li>
                  <a href={href} aria-current={page === current ? "page" : undefined}>{label}</a>
                </li>
              ))}
              <li>
                <a href="/docs">API reference</a>
              </li>
            </ul>
          </nav>
          <p id="who" aria-live="polite"></p>
          <button type="button" id="logout" hidden>Sign out</button>
        </header>
        <section id="login" aria-labelledby="login-h" hidden>
          <h2 id="login-h">Sign in</h2>
          <form id="login-form">
            <label for="api-key">API key</label>
            <input id="api-key" name="api-key" type="password" autocomplete="off" required />
            <button type="submit">Sign in</button>
            <p id="login-error" role="alert"></p>
          </form>
          <p>The key stays in this browser tab (sessionStorage) and is sent as a Bearer token with each API request.</p>
        </section>
        <main id="main" tabindex={-1}>
          <div id="error" role="alert"></div>
          {props.children}
        </main>
        <script src="/console/assets/uplot.js" defer></script>
        <script src="/console/assets/console.js" type="module"></script>
      </body>
    </html>
  );
}

const Field = (p: { id: string; label: string; children: Child }) => (
  <p class="field">
    <label for={p.id}>{p.label}</label>
    {p.children}
  </p>
);

function Jobs() {
  return (
    <>
      <h1>Fine-tuning jobs</h1>
      <section aria-labelledby="new-job-h">
        <h2 id="new-job-h">New job</h2>
        <form id="job-form">
          <Field id="job-model" label="Base model">
            <select id="job-model" name="model" required></select>
          </Field>
          <Field id="job-training-file" label="Training file">
            <select id="job-training-file" name="training_file" required></select>
          </Field>
          <Field id="job-validation-file" label="Validation file (optional)">
            <select id="job-validation-file" name="validation_file"></select>
          </Field>
          <Field id="job-suffix" label="Suffix">
            <input id="job-suffix" name="suffix" pattern="[A-Za-z0-9._\-]{1,64}" />
          </Field>
          <Field id="job-epochs" label="Epochs">
            <input id="job-epochs" name="n_epochs" type="number" min="1" max="50" value="3" />
          </Field>
          <Field id="job-batch" label="Batch size">
            <input id="job-batch" name="batch_size" type="number" min="1" max="256" value="1" />
          </Field>
          <Field id="job-lr" label="Learning rate">
            <input id="job-lr" name="learning_rate" type="number" step="any" min="0" value="0.0002" />
          </Field>
          <Field id="job-rank" label="LoRA rank">
            <input id="job-rank" name="lora_r" type="number" min="1" max="256" value="16" />
          </Field>
          <Field id="job-seq" label="Max sequence length (optional)">
            <input id="job-seq" name="max_seq_len" type="number" min="8" />
          </Field>
          <button type="submit">Start job</button>
        </form>
      </section>
      <table id="jobs-table">
        <caption>Jobs, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Job</th>
            <th scope="col">Owner</th>
            <th scope="col">Model</th>
            <th scope="col">Status</th>
            <th scope="col">Progress</th>
            <th scope="col">Created</th>
            <th scope="col">Fine-tuned model</th>
          </tr>
        </thead>
        <tbody></tbody>
      </table>
    </>
  );
}

function Job(p: { id: string }) {
  return (
    <>
      <h1>
        Job <code>{p.id}</code>
      </h1>
      <dl id="job-summary" class="summary"></dl>
      <p class="actions">
        <button type="button" id="cancel-job" hidden>Cancel job</button>
        <a id="open-playground" hidden>Open in playground</a>
      </p>
      <figure id="loss-chart" data-points="0">
        <figcaption>
          Training and validation loss by step <span id="loss-latest" aria-live="polite"></span>
        </figcaption>
        <div id="loss-plot"></div>
      </figure>
      <section aria-labelledby="hp-h">
        <h2 id="hp-h">Hyperparameters</h2>
        <dl id="hyperparameters" class="summary"></dl>
      </section>
      <table id="checkpoints-table">
        <caption>Checkpoints</caption>
        <thead>
          <tr>
            <th scope="col">Step</th>
            <th scope="col">Model</th>
            <th scope="col">Metrics</th>
            <th scope="col">Playground</th>
          </tr>
        </thead>
        <tbody></tbody>
      </table>
      <section aria-labelledby="events-h">
        <h2 id="events-h">Events</h2>
        <ol id="events" reversed></ol>
      </section>
    </>
  );
}

function Files() {
  return (
    <>
      <h1>Files</h1>
      <section aria-labelledby="upload-h">
        <h2 id="upload-h">Upload</h2>
        <form id="upload-form">
          <Field id="upload-file" label="JSONL file">
            <input id="upload-file" name="file" type="file" accept=".jsonl,.json,application/jsonl" required />
          </Field>
          <Field id="upload-purpose" label="Purpose">
            <select id="upload-purpose" name="purpose">
              <option value="fine-tune">fine-tune</option>
            </select>
          </Field>
          <button type="submit">Upload</button>
        </form>
        <div id="upload-error" role="alert"></div>
      </section>
      <table id="files-table">
        <caption>Files, newest first</caption>
        <thead>
          <tr>
            <th scope="col">File</th>
            <th scope="col">Name</th>
            <th scope="col">Purpose</th>
            <th scope="col">Bytes</th>
            <th scope="col">Created</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody></tbody>
      </table>
    </>
  );
}

function Models() {
  return (
    <>
      <h1>Models and adapters</h1>
      <table id="models-table">
        <caption>Models the key may use (the base, its adapters and fine-tuned models)</caption>
        <thead>
          <tr>
            <th scope="col">Model</th>
            <th scope="col">Owner</th>
            <th scope="col">Parent / base</th>
            <th scope="col">Rank</th>
            <th scope="col">Target modules</th>
            <th scope="col">Size</th>
            <th scope="col">Resident</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody></tbody>
      </table>
    </>
  );
}

function Pane(p: { side: "a" | "b"; label: string }) {
  return (
    <section class="pane" id={`pane-${p.side}`} aria-labelledby={`pane-${p.side}-h`} hidden={p.side === "b"}>
      <h2 id={`pane-${p.side}-h`}>{p.label}</h2>
      <Field id={`model-${p.side}`} label="Model or adapter">
        <select id={`model-${p.side}`} name={`model-${p.side}`}></select>
      </Field>
      <pre id={`out-${p.side}`} class="output" aria-live="polite" aria-busy="false" tabindex={0}></pre>
      <p id={`stats-${p.side}`} class="stats"></p>
    </section>
  );
}

function Playground() {
  return (
    <>
      <h1>Playground</h1>
      <form id="play-form">
        <fieldset>
          <legend>Request</legend>
          <Field id="play-endpoint" label="Endpoint">
            <select id="play-endpoint" name="endpoint">
              <option value="chat">Chat completions (the model's chat template)</option>
              <option value="completions">Completions (raw text)</option>
            </select>
          </Field>
          <Field id="play-prompt" label="Message">
            <textarea id="play-prompt" name="prompt" rows={3} required>Once upon a time</textarea>
          </Field>
          <Field id="play-temperature" label="Temperature">
            <input id="play-temperature" name="temperature" type="number" step="0.1" min="0" max="2" value="0.7" />
          </Field>
          <Field id="play-top-p" label="Top p">
            <input id="play-top-p" name="top_p" type="number" step="0.05" min="0" max="1" value="1" />
          </Field>
          <Field id="play-max-tokens" label="Max tokens">
            <input id="play-max-tokens" name="max_tokens" type="number" min="1" value="64" />
          </Field>
          <Field id="play-seed" label="Seed (optional)">
            <input id="play-seed" name="seed" type="number" min="0" />
          </Field>
          <p class="field check">
            <input id="play-compare" name="compare" type="checkbox" />
            <label for="play-compare">Compare two models side by side</label>
          </p>
          <button type="submit" id="play-send">Send</button>
          <button type="button" id="play-stop" disabled>Stop</button>
        </fieldset>
      </form>
      <div class="panes">
        <Pane side="a" label="Model A" />
        <Pane side="b" label="Model B" />
      </div>
      <section aria-labelledby="snippet-h">
        <h2 id="snippet-h">This request in code</h2>
        <h3>curl</h3>
        <pre id="snippet-curl" tabindex={0}></pre>
        <h3>TypeScript SDK</h3>
        <pre id="snippet-sdk" tabindex={0}></pre>
      </section>
    </>
  );
}

function ServerPage() {
  return (
    <>
      <h1>Server</h1>
      <section aria-labelledby="health-h">
        <h2 id="health-h">Health</h2>
        <dl id="health" class="summary"></dl>
      </section>
      <section aria-labelledby="memory-h">
        <h2 id="memory-h">Memory</h2>
        <dl id="memory" class="summary"></dl>
      </section>
      <section aria-labelledby="metrics-h">
        <h2 id="metrics-h">Throughput</h2>
        <p id="metrics-note"></p>
        <dl id="metrics" class="summary"></dl>
      </section>
    </>
  );
}

const TITLES: Record<PageName, string> = {
  jobs: "Fine-tuning",
  job: "Job",
  files: "Files",
  models: "Models & adapters",
  playground: "Playground",
  server: "Server",
};

/** The page's whole HTML document. */
export function renderPage(page: PageName, opts: { needsLogin: boolean; jobId?: string }): string {
  const body = page === "jobs"
    ? <Jobs />
    : page === "job"
    ? <Job id={opts.jobId ?? ""} />
    : page === "files"
    ? <Files />
    : page === "models"
    ? <Models />
    : page === "playground"
    ? <Playground />
    : <ServerPage />;
  const data = opts.jobId ? { "job-id": opts.jobId } : undefined;
  const html = (
    <Layout page={page} title={TITLES[page]} needsLogin={opts.needsLogin} data={data}>
      {body}
    </Layout>
  );
  return "<!doctype html>" + html.toString();
}
