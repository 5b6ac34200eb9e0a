// metrics.ts — Prometheus text exposition (format 0.0.4) of the serving metrics, including the
// `vllm:lora_requests_info` gauge (labels max_lora, running_lora_adapters,
// waiting_lora_adapters; value: the time of the sample) that Kubernetes' inference gateway reads,
// and vLLM's queue gauges under their vLLM names.
const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
const labelText = (l: Record<string, string>) => {
  const keys = Object.keys(l);
  return keys.length ? `{${keys.map((k) => `${k}="${esc(l[k])}"`).join(",")}}` : "";
};

class Counter {
  readonly values = new Map<string, { labels: Record<string, string>; v: number }>();
  constructor(readonly name: string, readonly help: string) {}
  inc(labels: Record<string, string> = {}, by = 1): void {
    const k = labelText(labels);
    const e = this.values.get(k);
    if (e) e.v += by;
    else this.values.set(k, { labels, v: by });
  }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.values.size === 0) out.push(`${this.name} 0`);
    for (const [k, e] of this.values) out.push(`${this.name}${k} ${e.v}`);
    return out;
  }
}

export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly name: string, readonly help: string, readonly buckets: number[]) {
    this.counts = new Array(buckets.length).fill(0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) this.counts[i]++;
  }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{le="${b}"} ${this.counts[i]}`));
    out.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`);
    return out;
  }
}

const LATENCY = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40];

export interface GaugeSource {
  running: number;
  waiting: number;
  maxLora: number;
  runningAdapters: string[];
  waitingAdapters: string[];
  residentAdapters: number;
  residentAdapterBytes: number;
  registeredAdapters: number;
  kvCacheUsage: number;
}

export class Metrics {
  readonly requests = new Counter("qlora_http_requests_total", "HTTP requests by route and status.");
  readonly promptTokens = new Counter("qlora_prompt_tokens_total", "Prompt tokens processed.");
  readonly generationTokens = new Counter("qlora_generation_tokens_total", "Tokens generated.");
  readonly finished = new Counter("qlora_request_success_total", "Finished generation requests by finish reason.");
  readonly rejected = new Counter("qlora_requests_rejected_total", "Generation requests rejected because the queue was full.");
  // per tenant and per adapter (for the admin: /metrics needs an admin key). Label values are
  // bounded: tenants come from the keys file, adapters from the tenants' quotas, reasons from codes.
  readonly tenantRequests = new Counter("qlora_tenant_requests_total", "Generation requests admitted, by tenant.");
  readonly tenantRejected = new Counter("qlora_tenant_requests_rejected_total", "Generation requests refused, by tenant and limit.");
  readonly tenantPromptTokens = new Counter("qlora_tenant_prompt_tokens_total", "Prompt tokens processed, by tenant.");
  readonly tenantGenerationTokens = new Counter("qlora_tenant_generation_tokens_total", "Tokens generated, by tenant.");
  readonly adapterGenerationTokens = new Counter(
    "qlora_adapter_generation_tokens_total",
    "Tokens generated, by tenant and model (the base model or an adapter).",
  );
  readonly ttft = new Histogram("qlora_time_to_first_token_seconds", "Time from request arrival to the first generated token.", LATENCY);
  readonly itl = new Histogram("qlora_inter_token_latency_seconds", "Time between consecutive tokens of one request.", LATENCY);
  readonly e2e = new Histogram("qlora_e2e_request_latency_seconds", "Request latency, arrival to last token.", LATENCY);
  readonly batch = new Histogram("qlora_batch_size", "Sequences per engine step.", [1, 2, 4, 8, 16, 32, 64, 128, 256]);
  readonly stepTime = new Histogram("qlora_step_seconds", "Engine step duration.", LATENCY);

  constructor(readonly gauges: () => GaugeSource) {}

  render(): string {
    const g = this.gauges();
    const gauge = (name: string, help: string, v: number) => [`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${v}`];
    const lines = [
      ...this.requests.render(),
      ...this.promptTokens.render(),
      ...this.generationTokens.render(),
      ...this.finished.render(),
      ...this.rejected.render(),
      ...this.tenantRequests.render(),
      ...this.tenantRejected.render(),
      ...this.tenantPromptTokens.render(),
      ...this.tenantGenerationTokens.render(),
      ...this.adapterGenerationTokens.render(),
      ...this.ttft.render(),
      ...this.itl.render(),
      ...this.e2e.render(),
      ...this.batch.render(),
      ...this.stepTime.render(),
      ...gauge("qlora_num_requests_running", "Sequences in the running batch.", g.running),
      ...gauge("qlora_num_requests_waiting", "Sequences waiting in the queue.", g.waiting),
      ...gauge("qlora_resident_adapters", "LoRA adapters resident on the device.", g.residentAdapters),
      ...gauge("qlora_resident_adapter_bytes", "Device bytes of resident LoRA adapters.", g.residentAdapterBytes),
      ...gauge("qlora_registered_adapters", "Registered LoRA adapters.", g.registeredAdapters),
      ...gauge("vllm:num_requests_running", "Number of requests currently running (vLLM name).", g.running),
      ...gauge("vllm:num_requests_waiting", "Number of requests waiting (vLLM name).", g.waiting),
      ...gauge("vllm:gpu_cache_usage_perc", "KV-cache usage, 0..1 (vLLM name).", g.kvCacheUsage),
      "# HELP vllm:lora_requests_info Running stats on lora requests.",
      "# TYPE vllm:lora_requests_info gauge",
      `vllm:lora_requests_info${
        labelText({
          max_lora: String(g.maxLora),
          running_lora_adapters: g.runningAdapters.join(","),
          waiting_lora_adapters: g.waitingAdapters.join(","),
        })
      } ${Date.now() / 1000}`,
    ];
    return lines.join("\n") + "\n";
  }
}
