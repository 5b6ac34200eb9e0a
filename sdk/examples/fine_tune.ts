// fine_tune.ts — upload a JSONL file, start a QLoRA fine-tuning job, follow it to the end, and chat
// with the fine-tuned model (servable at once, no restart).
//
//   deno run --allow-net --allow-env sdk/examples/fine_tune.ts
//
// (On the tiny default model of `deno task start`, random weights and a few steps, the loss goes
// down but the answer stays noise; on a real base model it learns the phrase.)
import { QloraClient, toFile } from "../mod.ts";

const client = new QloraClient();
const base = (await client.models.list()).data.find((m) => !m.parent)!;

// A tiny chat dataset: one question, one fixed answer.
const lines = Array.from({ length: 32 }, (_, i) =>
  JSON.stringify({
    messages: [
      { role: "user", content: `What is the password?${" ".repeat(i % 3)}` },
      { role: "assistant", content: "The password is swordfish." },
    ],
  }));
const file = await client.files.create({ file: toFile(lines.join("\n") + "\n", "password.jsonl"), purpose: "fine-tune" });
console.log(`uploaded ${file.id} (${file.bytes} bytes)`);

const job = await client.fineTuning.jobs.create({
  model: base.id,
  training_file: file.id,
  suffix: "password",
  seed: 1,
  method: {
    type: "supervised",
    supervised: { hyperparameters: { n_epochs: 4, batch_size: 4, learning_rate: 3e-3, lora_r: 8 } },
  },
});
console.log(`started ${job.id}`);

// wait() polls the job and reports each new event (loss, learning rate, tokens/s, …) once.
const done = await client.fineTuning.jobs.wait(job.id, {
  pollInterval: 500,
  onEvent: (e) => console.log(`  [${e.level}] ${e.message}`),
});
if (done.status !== "succeeded") throw new Error(`job ${done.id} ended ${done.status}: ${done.error?.message}`);
console.log(`fine-tuned model: ${done.fine_tuned_model}`);

for (const ckpt of (await client.fineTuning.jobs.checkpoints(job.id)).data) {
  console.log(`  checkpoint step ${ckpt.step_number}: ${ckpt.fine_tuned_model_checkpoint}`);
}

const answer = await client.chat.completions.create({
  model: done.fine_tuned_model!,
  messages: [{ role: "user", content: "What is the password?" }],
  max_tokens: 16,
  temperature: 0,
});
console.log(`answer: ${answer.choices[0].message.content}`);
