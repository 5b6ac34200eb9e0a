// symbols.ts — mirrors native/include/qlora.h one to one (C type noted per parameter).
// Pointers ("pointer") are device pointers from ql_alloc unless the C name says host_*;
// "buffer" parameters take a TypedArray (host memory) directly.
// Every call but one is synchronous: it runs on the calling (JavaScript) thread, blocks it until
// the native function returns, and returns its value directly (not a Promise); the engine worker
// (serving/host.ts) keeps them off the HTTP thread. ql_read_file alone is `nonblocking` (it runs
// on a thread of Deno's and returns a Promise), so a file is read while the JavaScript thread is
// in another native call. tests/native/contract_test.ts checks this table against qlora.h.

export const ABI_VERSION = 2;

export const symbols = {
  ql_abi_version: { parameters: [], result: "u32" },
  ql_backend_name: { parameters: [], result: "pointer" }, // const char*
  ql_last_error: { parameters: [], result: "pointer" }, // const char*
  ql_ctx_create: { parameters: ["i32", /* n_threads */ "i32", /* device */ "buffer" /* ql_ctx** out */], result: "i32" },
  ql_ctx_destroy: { parameters: ["pointer" /* ql_ctx* */], result: "void" },
  ql_ctx_describe: { parameters: ["pointer", /* ql_ctx* */ "buffer", /* char* buf */ "u64" /* cap */], result: "i32" },
  ql_sync: { parameters: ["pointer" /* ql_ctx* */], result: "i32" },

  ql_alloc: { parameters: ["pointer", /* ctx */ "u64", /* bytes */ "buffer" /* void** out */], result: "i32" },
  ql_free: { parameters: ["pointer", /* ctx */ "pointer" /* void* */], result: "i32" },
  ql_copy_to_device: {
    parameters: ["pointer", /* ctx */ "pointer", /* void* dst */ "buffer", /* const void* host_src */ "u64" /* bytes */],
    result: "i32",
  },
  ql_copy_to_host: {
    parameters: ["pointer", /* ctx */ "buffer", /* void* host_dst */ "pointer", /* const void* src */ "u64" /* bytes */],
    result: "i32",
  },
  ql_copy_device: { parameters: ["pointer", /* ctx */ "pointer", /* dst */ "pointer", /* src */ "u64" /* bytes */], result: "i32" },
  ql_fill_zero: { parameters: ["pointer", /* ctx */ "pointer", /* dst */ "u64" /* bytes */], result: "i32" },
  ql_convert: {
    parameters: ["pointer", /* ctx */ "pointer", /* out */ "i32", /* out_dtype */ "pointer", /* in */ "i32", /* in_dtype */ "i64" /* n */],
    result: "i32",
  },

  ql_quantize_4bit: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* uint8_t* packed */
      "pointer", /* float* absmax */
      "pointer", /* const float* x */
      "u64", /* n */
      "i32", /* blocksize */
      "i32", /* quant_type */
    ],
    result: "i32",
  },
  ql_dequantize_4bit: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* float* out */
      "pointer", /* const uint8_t* packed */
      "pointer", /* const float* absmax */
      "u64", /* n */
      "i32", /* blocksize */
      "i32", /* quant_type */
    ],
    result: "i32",
  },
  ql_quantize_absmax_8bit: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* uint8_t* qabsmax */
      "pointer", /* float* absmax2 */
      "pointer", /* float* offset */
      "pointer", /* const float* absmax */
      "u64", /* nb */
      "i32", /* nested_blocksize */
    ],
    result: "i32",
  },
  ql_dequantize_absmax_8bit: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* float* absmax */
      "pointer", /* const uint8_t* qabsmax */
      "pointer", /* const float* absmax2 */
      "pointer", /* const float* offset */
      "u64", /* nb */
      "i32", /* nested_blocksize */
    ],
    result: "i32",
  },
  ql_codebook: { parameters: ["i32", /* quant_type */ "buffer" /* float* host_out16 */], result: "i32" },
  ql_dynamic_map: { parameters: ["buffer" /* float* host_out256 */], result: "i32" },

  ql_read_file: {
    parameters: ["buffer", /* const char* path */ "u64", /* offset */ "u64", /* bytes */ "buffer", /* void* host_dst */ "i32" /* direct */],
    result: "i64",
    nonblocking: true,
  },

  ql_qweight_quantize: {
    parameters: [
      "pointer", /* ctx */
      "buffer", /* const void* host_w */
      "i32", /* w_dtype */
      "i64", /* rows */
      "i64", /* cols */
      "i32", /* quant_type */
      "i32", /* blocksize */
      "i32", /* double_quant */
      "buffer", /* ql_qweight** out */
    ],
    result: "i32",
  },
  ql_qweight_import: {
    parameters: [
      "pointer", /* ctx */
      "i64", /* rows */
      "i64", /* cols */
      "i32", /* quant_type */
      "i32", /* blocksize */
      "buffer", /* const uint8_t* host_packed */
      "buffer", /* const float* host_absmax */
      "buffer", /* const uint8_t* host_qabsmax */
      "buffer", /* const float* host_absmax2 */
      "f32", /* offset */
      "i32", /* nested_blocksize */
      "buffer", /* const float* host_code */
      "buffer", /* ql_qweight** out */
    ],
    result: "i32",
  },
  ql_qweight_export: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* const ql_qweight* */
      "buffer", /* uint8_t* host_packed */
      "buffer", /* float* host_absmax */
      "buffer", /* uint8_t* host_qabsmax */
      "buffer", /* float* host_absmax2 */
      "buffer", /* float* host_offset */
    ],
    result: "i32",
  },
  ql_qweight_info: { parameters: ["pointer", /* const ql_qweight* */ "buffer" /* int64_t* host_out8 */], result: "i32" },
  ql_qweight_dequantize: {
    parameters: ["pointer", /* ctx */ "pointer", /* void* out */ "pointer", /* const ql_qweight* */ "i32" /* dtype */],
    result: "i32",
  },
  ql_qweight_destroy: { parameters: ["pointer" /* ql_qweight* */], result: "void" },

  ql_matmul_4bit: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* y */
      "pointer", /* const void* x */
      "pointer", /* const ql_qweight* */
      "i64", /* m */
      "i32", /* dtype */
      "i32", /* accumulate */
    ],
    result: "i32",
  },
  ql_matmul_4bit_backward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* dx */
      "pointer", /* const void* dy */
      "pointer", /* const ql_qweight* */
      "i64", /* m */
      "i32", /* dtype */
      "i32", /* accumulate */
    ],
    result: "i32",
  },
  ql_gemm: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* c */
      "i32", /* c_dtype */
      "pointer", /* const void* a */
      "i32", /* a_dtype */
      "pointer", /* const void* b */
      "i32", /* b_dtype */
      "i64", /* m */
      "i64", /* n */
      "i64", /* k */
      "i32", /* trans_a */
      "i32", /* trans_b */
      "f32", /* alpha */
      "f32", /* beta */
    ],
    result: "i32",
  },

  ql_embedding_forward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* out */
      "pointer", /* const int32_t* ids */
      "pointer", /* const void* table */
      "i64", /* T */
      "i64", /* V */
      "i64", /* C */
      "i32", /* dtype */
      "i32", /* table_dtype */
    ],
    result: "i32",
  },
  ql_embedding_backward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* float* dtable */
      "pointer", /* const void* dout */
      "pointer", /* const int32_t* ids */
      "i64", /* T */
      "i64", /* V */
      "i64", /* C */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_rmsnorm_forward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* out */
      "pointer", /* float* rstd */
      "pointer", /* const void* x */
      "pointer", /* const float* weight */
      "i64", /* T */
      "i64", /* C */
      "f32", /* eps */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_rmsnorm_backward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* dx */
      "pointer", /* float* dweight */
      "pointer", /* const void* dout */
      "pointer", /* const void* x */
      "pointer", /* const float* weight */
      "pointer", /* const float* rstd */
      "i64", /* T */
      "i64", /* C */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_rope_forward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* out */
      "pointer", /* const void* x */
      "pointer", /* const int32_t* positions */
      "pointer", /* const float* inv_freq */
      "i64", /* T */
      "i64", /* Hn */
      "i64", /* D */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_rope_backward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* dx */
      "pointer", /* const void* dout */
      "pointer", /* const int32_t* positions */
      "pointer", /* const float* inv_freq */
      "i64", /* T */
      "i64", /* Hn */
      "i64", /* D */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_kv_cache_write: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* k_cache */
      "pointer", /* void* v_cache */
      "pointer", /* const void* k */
      "pointer", /* const void* v */
      "pointer", /* const int32_t* slots */
      "i64", /* T */
      "i64", /* num_blocks */
      "i64", /* block_size */
      "i64", /* Hkv */
      "i64", /* D */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_attention_paged: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* out */
      "pointer", /* const void* q */
      "pointer", /* const void* k_cache */
      "pointer", /* const void* v_cache */
      "buffer", /* const int32_t* host_block_tables */
      "buffer", /* const int32_t* host_q_start */
      "buffer", /* const int32_t* host_ctx_lens */
      "i64", /* S */
      "i64", /* max_blocks */
      "i64", /* num_blocks */
      "i64", /* block_size */
      "i64", /* H */
      "i64", /* Hkv */
      "i64", /* D */
      "f32", /* softmax_scale */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_attention_forward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* out */
      "pointer", /* float* lse */
      "pointer", /* const void* q */
      "pointer", /* const void* k */
      "pointer", /* const void* v */
      "buffer", /* const int32_t* host_cu_seqlens */
      "i64", /* S */
      "i64", /* T */
      "i64", /* H */
      "i64", /* Hkv */
      "i64", /* D */
      "f32", /* softmax_scale */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_attention_backward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* dq */
      "pointer", /* void* dk */
      "pointer", /* void* dv */
      "pointer", /* const void* dout */
      "pointer", /* const void* out */
      "pointer", /* const float* lse */
      "pointer", /* const void* q */
      "pointer", /* const void* k */
      "pointer", /* const void* v */
      "buffer", /* const int32_t* host_cu_seqlens */
      "i64", /* S */
      "i64", /* T */
      "i64", /* H */
      "i64", /* Hkv */
      "i64", /* D */
      "f32", /* softmax_scale */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_silu_mul_forward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* out */
      "pointer", /* const void* gate */
      "pointer", /* const void* up */
      "i64", /* n */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_silu_mul_backward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* dgate */
      "pointer", /* void* dup */
      "pointer", /* const void* dout */
      "pointer", /* const void* gate */
      "pointer", /* const void* up */
      "i64", /* n */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_add: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* out */
      "pointer", /* const void* a */
      "pointer", /* const void* b */
      "f32", /* alpha */
      "i64", /* n */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_cross_entropy: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* float* losses */
      "pointer", /* void* dlogits */
      "pointer", /* const void* logits */
      "pointer", /* const int32_t* targets */
      "pointer", /* const float* weights */
      "f32", /* grad_scale */
      "i64", /* T */
      "i64", /* V */
      "i32", /* dtype */
    ],
    result: "i32",
  },

  ql_lora_forward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* y */
      "pointer", /* float* xa */
      "pointer", /* const void* x */
      "pointer", /* const float* A */
      "pointer", /* const float* B */
      "i64", /* T */
      "i64", /* in */
      "i64", /* out */
      "i64", /* r */
      "f32", /* scale */
      "f32", /* dropout_p */
      "u64", /* seed */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_lora_backward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* dx */
      "pointer", /* float* dA */
      "pointer", /* float* dB */
      "pointer", /* const void* dy */
      "pointer", /* const void* x */
      "pointer", /* const float* xa */
      "pointer", /* const float* A */
      "pointer", /* const float* B */
      "i64", /* T */
      "i64", /* in */
      "i64", /* out */
      "i64", /* r */
      "f32", /* scale */
      "f32", /* dropout_p */
      "u64", /* seed */
      "i32", /* dtype */
    ],
    result: "i32",
  },
  ql_lora_multi_forward: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* void* y */
      "pointer", /* const void* x */
      "buffer", /* const int32_t* host_row_adapter */
      "buffer", /* const uint64_t* host_a_ptrs */
      "buffer", /* const uint64_t* host_b_ptrs */
      "buffer", /* const int32_t* host_ranks */
      "buffer", /* const float* host_scales */
      "i64", /* n_adapters */
      "i64", /* T */
      "i64", /* in */
      "i64", /* out */
      "i32", /* dtype */
    ],
    result: "i32",
  },

  ql_optimizer_create: {
    parameters: [
      "pointer", /* ctx */
      "i32", /* kind */
      "u64", /* budget_bytes */
      "buffer", /* const char* spill_dir (NUL-terminated, may be null) */
      "buffer", /* ql_optimizer** out */
    ],
    result: "i32",
  },
  ql_optimizer_add: { parameters: ["pointer", /* ql_optimizer* */ "i64", /* n */ "buffer" /* int64_t* out_index */], result: "i32" },
  ql_optimizer_step: {
    parameters: [
      "pointer", /* ql_optimizer* */
      "i64", /* index */
      "pointer", /* float* param */
      "pointer", /* const float* grad */
      "f32", /* lr */
      "f32", /* beta1 */
      "f32", /* beta2 */
      "f32", /* eps */
      "f32", /* weight_decay */
      "f32", /* grad_scale */
      "i64", /* step */
    ],
    result: "i32",
  },
  ql_optimizer_get_state: {
    parameters: ["pointer", /* ql_optimizer* */ "i64", /* index */ "buffer", /* float* host_m */ "buffer" /* float* host_v */],
    result: "i32",
  },
  ql_optimizer_set_state: {
    parameters: ["pointer", /* ql_optimizer* */ "i64", /* index */ "buffer", /* const float* host_m */ "buffer" /* const float* host_v */],
    result: "i32",
  },
  ql_optimizer_memory: { parameters: ["pointer", /* const ql_optimizer* */ "buffer" /* uint64_t* host_out3 */], result: "i32" },
  ql_optimizer_destroy: { parameters: ["pointer" /* ql_optimizer* */], result: "void" },
  ql_sum_squares: {
    parameters: ["pointer", /* ctx */ "pointer", /* float* out */ "pointer", /* const float* g */ "i64" /* n */],
    result: "i32",
  },
  ql_scale: { parameters: ["pointer", /* ctx */ "pointer", /* float* x */ "f32", /* alpha */ "i64" /* n */], result: "i32" },
  ql_topk: {
    parameters: [
      "pointer", /* ctx */
      "pointer", /* int32_t* out_ids */
      "pointer", /* float* out_vals */
      "pointer", /* const void* logits */
      "i64", /* B */
      "i64", /* V */
      "i64", /* k */
      "i32", /* dtype */
    ],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

export type Symbols = typeof symbols;
