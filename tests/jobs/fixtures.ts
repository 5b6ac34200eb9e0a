// fixtures.ts — what the job tests share: the hyperparameters of tests/training/trainer_test.ts
// in the API's names (they teach the tiny model the secret word in a few seconds).
import type { HyperparametersInput } from "../../server/jobs/hyperparameters.ts";

export const TEACH: HyperparametersInput = {
  n_epochs: 4,
  batch_size: 1,
  learning_rate: 1e-2,
  lora_r: 8,
  lora_alpha: 16,
  lora_dropout: 0,
  target_modules: "all-linear",
  warmup_ratio: 0.1,
  lr_scheduler: "cosine",
  max_grad_norm: 1,
  max_seq_len: 64,
  packing: true,
  optimizer: "paged_adamw",
};
