// fixtures.ts — the one place tests find their data files: everything lives in the repository
// (tests/fixtures/), so a fresh clone runs the suite with nothing beside it.
const here = (p: string) => new URL(p, import.meta.url).pathname;

/** llama2.c's stories260K in the Hugging Face layout (MIT), with reference_greedy.json; no chat template. */
export const STORIES_DIR = here("./fixtures/models/stories260K");
/** Bit-exact NF4/FP4 quantization cases (bitsandbytes' semantics); see fixtures/reference/README.md. */
export const NF4_VECTORS = here("./fixtures/reference/nf4_vectors.json");
