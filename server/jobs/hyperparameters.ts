// hyperparameters.ts — every fine-tuning hyperparameter, once: its type, range, default and
// description in one zod schema. The API validates requests with it and documents it
// (FineTuningHyperparameters, whence the SDK's types); the resolver parses with it, so absent
// and "auto" values become the defaults written here, and adds what needs the job's context (the
// model's length, the quants on offer, the number of examples); the documented resolved shape
// (ResolvedFineTuningHyperparameters) and the trainer's config are derived from it.
import { z } from "@hono/zod-openapi";
import { OptimizerKind, type OptimizerKindName } from "../ffi/optim.ts";
import { LORA_MODULES } from "../model/llama.ts";
import { ClientError } from "../util/errors.ts";
import type { TrainHyper } from "../training/trainer.ts";

/** The training methods (OpenAI's `method.type`; "reinforcement" is not offered). */
export const METHODS = ["supervised", "dpo"] as const;
export type JobMethod = (typeof METHODS)[number];

/** Where a method's hyperparameters sit in a create request (the `param` of their errors). */
export const hyperparametersParam = (method: JobMethod) => `method.${method}.hyperparameters`;

const QUANTS = ["nf4", "none"] as const;
export type JobQuant = (typeof QUANTS)[number];

const OPTIMIZERS = Object.keys(OptimizerKind) as OptimizerKindName[];

/** `type`, with `dflt` when absent (the default is shown in the description). A transform rather
 * than zod's .default(), which would make the field required in the generated SDK types. */
function withDefault<T extends z.ZodType>(type: T, dflt: z.output<T>, description: string) {
  return type.optional().transform((v) => v ?? dflt).openapi({ description: `${description} (default ${JSON.stringify(dflt)}).` });
}

/** A number that may also be "auto"; absent and "auto" become `auto`. */
function orAuto(type: z.ZodNumber, auto: number, description: string) {
  return z.union([z.literal("auto"), type]).optional().transform((v) => v === undefined || v === "auto" ? auto : v)
    .openapi({ description: `${description} ("auto": ${auto}).` });
}

/** A number that may be "auto", left "auto" for the resolver (its value depends on the job). */
function contextAuto(type: z.ZodNumber, description: string) {
  return z.union([z.literal("auto"), type]).optional().transform((v) => v ?? "auto").openapi({ description });
}

const TargetModules = z.array(z.enum(LORA_MODULES)).min(1).max(LORA_MODULES.length)
  .refine((ms) => new Set(ms).size === ms.length, "names a module twice");

/** OpenAI's three (n_epochs, batch_size, learning_rate_multiplier), then our extensions. */
export const HyperparametersSchema = z.object({
  n_epochs: orAuto(z.number().int().min(1).max(50), 3, "Passes over the training data"),
  batch_size: contextAuto(
    z.number().int().min(1).max(256),
    "Examples per optimizer step, as in OpenAI's API (packing only decides how a step is cut into micro-batches; " +
      '"auto": about 0.2% of the training examples, from 1 to 256).',
  ),
  learning_rate_multiplier: orAuto(z.number().gt(0).max(10), 1, "Scales learning_rate"),
  learning_rate: withDefault(z.number().gt(0).max(1), 2e-4, "Extension: peak learning rate before the multiplier"),
  lora_r: withDefault(z.number().int().min(1).max(1024), 16, "Extension: LoRA rank"),
  lora_alpha: z.number().gt(0).max(4096).optional().openapi({ description: "Extension: LoRA alpha (default 2 × lora_r)." }),
  lora_dropout: withDefault(z.number().min(0).lt(1), 0.05, "Extension: dropout on the LoRA input"),
  target_modules: z.union([z.literal("all-linear"), TargetModules]).optional()
    // the modules in the model's order, whatever order the request named them in
    .transform((v) => LORA_MODULES.filter((m) => v === undefined || v === "all-linear" || v.includes(m)))
    .openapi({ description: 'Extension: modules that get LoRA (default "all-linear").' }),
  use_rslora: withDefault(z.boolean(), false, "Extension: scale by alpha/√r instead of alpha/r"),
  warmup_ratio: withDefault(z.number().min(0).lt(1), 0.03, "Extension: fraction of steps of linear warmup"),
  lr_scheduler: withDefault(z.enum(["linear", "cosine", "constant"]), "linear", "Extension: decay after warmup"),
  max_grad_norm: withDefault(z.number().min(0).max(1e4), 1, "Extension: global gradient-norm clipping, 0 for none"),
  gradient_accumulation_steps: withDefault(
    z.number().int().min(1).max(1024),
    1,
    "Extension: at least this many micro-batches per optimizer step (less memory; a step is still batch_size examples)",
  ),
  max_seq_len: z.number().int().min(8).max(131072).optional().openapi({
    description: "Extension: longest sequence, in tokens (default min(1024, the model's)).",
  }),
  packing: withDefault(
    z.boolean(),
    true,
    "Extension: pack a step's examples into micro-batches of 4 × max_seq_len tokens, no attention across them (false: one example per micro-batch)",
  ),
  train_on_inputs: withDefault(z.boolean(), false, "Extension: take the loss on every token, not only the assistant's"),
  optimizer: withDefault(z.enum(OPTIMIZERS), "paged_adamw", "Extension: the AdamW variant"),
  quant: z.enum(QUANTS).optional().openapi({
    description: "Extension: the base's storage: nf4 (QLoRA) or none (16/32-bit LoRA) (default: the served base's).",
  }),
  full_finetune: withDefault(
    z.boolean().refine(
      (full) => !full,
      "full fine-tuning is not supported by this server: it trains LoRA adapters on a frozen base (set full_finetune to false)",
    ),
    false,
    "Extension: not supported (LoRA only); true is a 400",
  ),
  weight_decay: withDefault(z.number().min(0).max(1), 0, "Extension: AdamW weight decay"),
  checkpoint_every: orAuto(z.number().int().min(0).max(1e6), 0, "Extension: steps between checkpoints, 0 for about 5 per job"),
}).strict().openapi("FineTuningHyperparameters");

/** DPO's: the supervised ones and β (OpenAI's method.dpo.hyperparameters, with our extensions). */
export const DpoHyperparametersSchema = HyperparametersSchema.extend({
  beta: orAuto(z.number().gt(0).max(2), 0.1, "How far the policy may move from the reference (the base): larger stays closer"),
}).strict().openapi("FineTuningDpoHyperparameters");

const SCHEMAS = { supervised: HyperparametersSchema, dpo: DpoHyperparametersSchema } as const;

/** What a request may give (every field optional). */
export type HyperparametersInput = z.input<typeof DpoHyperparametersSchema>;
type Parsed = z.output<typeof DpoHyperparametersSchema>;
/** Every hyperparameter resolved: what the job runs with and shows (beta for DPO only). */
export type Hyperparameters = { [K in Exclude<keyof Parsed, "beta">]-?: Exclude<Parsed[K], "auto" | undefined> } & { beta?: number };

/** The type a field resolves to: its input type without absence, "auto" or "all-linear", and
 * without the input's range (learning_rate resolves to learning_rate × learning_rate_multiplier). */
function resolvedType(field: z.ZodType): z.ZodType {
  if (field instanceof z.ZodPipe) return resolvedType(field.in as z.ZodType);
  if (field instanceof z.ZodOptional) return resolvedType(field.unwrap() as z.ZodType);
  if (field instanceof z.ZodUnion) return resolvedType(field.options.find((o) => !(o instanceof z.ZodLiteral)) as z.ZodType);
  if (field instanceof z.ZodNumber) return field.isInt ? z.number().int() : z.number();
  return field;
}

const resolvedShape = (schema: z.ZodObject) =>
  Object.fromEntries(Object.entries(schema.shape).map(([name, field]) => [name, resolvedType(field as z.ZodType)]));

/** The resolved hyperparameters a job shows (method.supervised.hyperparameters). */
export const ResolvedHyperparametersSchema = z.object(resolvedShape(HyperparametersSchema)).openapi(
  "ResolvedFineTuningHyperparameters",
);
/** The resolved hyperparameters of a DPO job (method.dpo.hyperparameters). */
export const ResolvedDpoHyperparametersSchema = z.object(resolvedShape(DpoHyperparametersSchema)).openapi(
  "ResolvedFineTuningDpoHyperparameters",
);

/** What the defaults depend on besides the request. */
export interface ResolveContext {
  /** Training examples ("auto" batch size). */
  examples: number;
  /** The model's longest sequence (max_seq_len's default and upper bound). */
  maxModelLen: number;
  /** The quants the server can train with, the served base's first (the default). */
  quants: readonly JobQuant[];
}

/** OpenAI's documented "auto" batch size: about 0.2% of the examples, from 1 to 256. */
export const autoBatchSize = (examples: number) => Math.max(1, Math.min(256, Math.round(examples * 0.002)));

/**
 * Resolves the hyperparameters (absent and "auto" → defaults) and checks every range, including
 * the ones that depend on the job; errors name the field.
 */
export function resolveHyperparameters(
  input: HyperparametersInput,
  ctx: ResolveContext,
  method: JobMethod = "supervised",
): Hyperparameters {
  const invalid = (field: string, message: string) =>
    new ClientError(400, `${field}: ${message}`, "invalid_value", `${hyperparametersParam(method)}.${field}`);
  const parsed = SCHEMAS[method].safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const unknown = issue.code === "unrecognized_keys" ? issue.keys[0] : undefined;
    if (unknown !== undefined) throw invalid(unknown, "unknown hyperparameter");
    throw invalid(String(issue.path[0] ?? "hyperparameters"), issue.message);
  }
  const h = parsed.data as Parsed;
  const quant = h.quant ?? ctx.quants[0];
  if (quant === undefined) throw invalid("quant", "this server's base cannot be trained (it is served in a quant other than nf4 or none)");
  if (!ctx.quants.includes(quant)) {
    throw invalid("quant", `quant "${quant}" is not available on this server (available: ${ctx.quants.join(", ")})`);
  }
  if (h.max_seq_len !== undefined && h.max_seq_len > ctx.maxModelLen) {
    throw invalid("max_seq_len", `must be in [8, ${ctx.maxModelLen}] (got ${h.max_seq_len})`);
  }
  return {
    ...h,
    quant,
    batch_size: h.batch_size === "auto" ? autoBatchSize(ctx.examples) : h.batch_size,
    learning_rate: h.learning_rate * h.learning_rate_multiplier,
    lora_alpha: h.lora_alpha ?? 2 * h.lora_r,
    max_seq_len: h.max_seq_len ?? Math.min(1024, ctx.maxModelLen),
  };
}

type CamelCase<S extends string> = S extends `${infer Head}_${infer Tail}` ? `${Head}${Capitalize<CamelCase<Tail>>}` : S;
type CamelCased<T> = { [K in keyof T & string as CamelCase<K>]: T[K] };

/** The trainer's config for a job: the hyperparameters under the trainer's names, and what only
 * the runner knows (the seed, the optimizer's memory budget, the checkpoint interval in steps). */
export function trainConfig(
  h: Hyperparameters,
  run: Pick<TrainHyper, "seed" | "optimizerBudgetBytes" | "checkpointEvery">,
  method: JobMethod = "supervised",
): TrainHyper {
  const { beta, ...rest } = h;
  const renamed = Object.fromEntries(
    Object.entries(rest).map(([name, value]) => [name.replace(/_(.)/g, (_, c: string) => c.toUpperCase()), value]),
  ) as CamelCased<Omit<Hyperparameters, "beta">>;
  return { ...renamed, ...run, evalEvery: 0, method, ...(method === "dpo" ? { dpoBeta: beta } : {}) };
}
