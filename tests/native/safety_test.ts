// safety_test.ts — calls that would overflow a size product, read host arrays past a bounded
// length, or pass a stale or foreign handle get a status and a message (ql_last_error), never a
// crash or a wrong acceptance.
import assert from "node:assert/strict";
import type { Context } from "../../server/ffi/tensor.ts";
import { testEachBackend } from "./backends.ts";

const QL_E_INVALID = 1;
const big = BigInt;

function lastError(ctx: Context): string {
  const p = ctx.lib.symbols.ql_last_error();
  return p === null ? "" : new Deno.UnsafePointerView(p).getCString();
}

function assertInvalid(ctx: Context, status: number, fragment: string | RegExp): void {
  const msg = lastError(ctx);
  assert.equal(status, QL_E_INVALID, `expected QL_E_INVALID, got ${status} (${msg})`);
  if (typeof fragment === "string") assert.ok(msg.includes(fragment), `message "${msg}" should mention "${fragment}"`);
  else assert.match(msg, fragment);
}

function handle(cell: BigUint64Array): Deno.PointerObject {
  const p = Deno.UnsafePointer.create(cell[0]);
  assert.ok(p !== null, "a null handle came back");
  return p;
}

// ---------------------------------------------------------------- size arithmetic

testEachBackend("paged attention: max_blocks * block_size overflowing int64 is rejected", (ctx) => {
  // 2^40 * (2^24 + 1) wraps to a small positive int64: before the checked product, ctx_len 5 was
  // accepted against it and the backend read a cache of one block as if it had 2^40.
  using buf = ctx.alloc(4096);
  const D = 8;
  const st = ctx.lib.symbols.ql_attention_paged(
    ctx.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    new Int32Array([0, 0]),
    new Int32Array([0, 5]),
    new Int32Array([5]),
    1n,
    big(2 ** 40),
    1n,
    big(2 ** 24 + 1),
    1n,
    1n,
    big(D),
    0.125,
    0,
  );
  assertInvalid(ctx, st, "max_blocks * block_size is too large");
});

testEachBackend("paged attention: S is bounded before host_q_start[S] is read", (ctx) => {
  using buf = ctx.alloc(4096);
  // host_q_start has 2 entries; S = 2^40 used to read host_q_start[2^40] (a crash).
  const st = ctx.lib.symbols.ql_attention_paged(
    ctx.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    new Int32Array([0]),
    new Int32Array([0, 1]),
    new Int32Array([1]),
    big(2 ** 40),
    1n,
    1n,
    16n,
    1n,
    1n,
    8n,
    0.125,
    0,
  );
  assertInvalid(ctx, st, /S = 1099511627776 sequences is more than \d+ per call/);
});

testEachBackend("attention forward/backward: S is bounded by T before host_cu_seqlens is read", (ctx) => {
  using buf = ctx.alloc(4096);
  using lse = ctx.alloc(4096);
  const cu = new Int32Array([0, 4]); // 2 entries; S = 2^40 used to make check_prefix read past them
  const S = big(2 ** 40), T = 4n;
  const fwd = ctx.lib.symbols.ql_attention_forward(ctx.ptr, buf.ptr, lse.ptr, buf.ptr, buf.ptr, buf.ptr, cu, S, T, 1n, 1n, 8n, 0.125, 0);
  assertInvalid(ctx, fwd, "ql_attention_forward: S = 1099511627776 sequences is more than T = 4 rows");
  const bwd = ctx.lib.symbols.ql_attention_backward(
    ctx.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    lse.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    cu,
    S,
    T,
    1n,
    1n,
    8n,
    0.125,
    0,
  );
  assertInvalid(ctx, bwd, "ql_attention_backward: S = 1099511627776 sequences is more than T = 4 rows");
  // T itself must fit the i32 prefix sums
  const wide = ctx.lib.symbols.ql_attention_forward(
    ctx.ptr,
    buf.ptr,
    lse.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    cu,
    1n,
    big(2 ** 31),
    1n,
    1n,
    1n,
    1,
    0,
  );
  assertInvalid(ctx, wide, "does not fit the i32 cu_seqlens");
});

testEachBackend("size products overflowing int64 are rejected (embedding, gemm, kv cache)", (ctx) => {
  using buf = ctx.alloc(4096);
  // T * C = 2^62 * 4 overflows int64
  const emb = ctx.lib.symbols.ql_embedding_forward(ctx.ptr, buf.ptr, buf.ptr, buf.ptr, big(2 ** 62), 4n, 4n, 0, 0);
  assertInvalid(ctx, emb, "sizes too large");
  const gemm = ctx.lib.symbols.ql_gemm(ctx.ptr, buf.ptr, 0, buf.ptr, 0, buf.ptr, 0, big(2 ** 32), big(2 ** 32), 1n, 0, 0, 1, 0);
  assertInvalid(ctx, gemm, "sizes too large");
  // num_blocks * block_size * Hkv * D = 2^32 * 2^32 overflows
  const kv = ctx.lib.symbols.ql_kv_cache_write(
    ctx.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    buf.ptr,
    1n,
    big(2 ** 32),
    big(2 ** 32),
    1n,
    8n,
    0,
  );
  assertInvalid(ctx, kv, "sizes too large");
});

// ---------------------------------------------------------------- handles

testEachBackend("a destroyed context is rejected with a status; destroying it again is harmless", (ctx) => {
  const s = ctx.lib.symbols;
  const cell = new BigUint64Array(1);
  ctx.lib.check(s.ql_ctx_create(1, 0, cell), "ql_ctx_create");
  const dead = handle(cell);
  s.ql_ctx_destroy(dead);
  assertInvalid(ctx, s.ql_sync(dead), "ql_sync: ctx is not a live ql_ctx (destroyed, or not a context)");
  const out = new BigUint64Array(1);
  assertInvalid(ctx, s.ql_alloc(dead, 64n, out), "ql_alloc: ctx is not a live ql_ctx");
  assert.equal(out[0], 0n, "no allocation handed out");
  s.ql_ctx_destroy(dead); // second destroy: nothing freed, a message recorded
  assert.match(lastError(ctx), /ql_ctx_destroy: ctx is not a live ql_ctx/);
  // the live context is untouched
  ctx.lib.check(s.ql_sync(ctx.ptr), "ql_sync");
});

testEachBackend("destroyed weights and optimizers are rejected, as are children of a destroyed context", (ctx) => {
  const s = ctx.lib.symbols;
  const rows = 4, cols = 64;
  const w32 = new Float32Array(rows * cols).map((_, i) => Math.sin(i));
  const cell = new BigUint64Array(1);
  ctx.lib.check(s.ql_qweight_quantize(ctx.ptr, w32, 0, big(rows), big(cols), 0, 64, 0, cell), "quantize");
  const w = handle(cell);
  const info = new BigInt64Array(8);
  ctx.lib.check(s.ql_qweight_info(w, info), "info");
  s.ql_qweight_destroy(w);
  assertInvalid(ctx, s.ql_qweight_info(w, info), "ql_qweight_info: w is not a live ql_qweight (destroyed, or not a ql_qweight)");
  using y = ctx.alloc(rows * 4);
  using x = ctx.alloc(cols * 4);
  assertInvalid(ctx, s.ql_matmul_4bit(ctx.ptr, y.ptr, x.ptr, w, 1n, 0, 0), "ql_matmul_4bit: w is not a live ql_qweight");
  s.ql_qweight_destroy(w);

  ctx.lib.check(s.ql_optimizer_create(ctx.ptr, 0, 0n, null, cell), "optimizer");
  const opt = handle(cell);
  const index = new BigInt64Array(1);
  ctx.lib.check(s.ql_optimizer_add(opt, 16n, index), "add");
  s.ql_optimizer_destroy(opt);
  assertInvalid(ctx, s.ql_optimizer_add(opt, 16n, index), "ql_optimizer_add: opt is not a live ql_optimizer");
  s.ql_optimizer_destroy(opt);

  // children outliving their context (a contract violation) are refused, not followed
  ctx.lib.check(s.ql_ctx_create(1, 0, cell), "ql_ctx_create");
  const other = handle(cell);
  ctx.lib.check(s.ql_qweight_quantize(other, w32, 0, big(rows), big(cols), 0, 64, 0, cell), "quantize");
  const orphan = handle(cell);
  ctx.lib.check(s.ql_optimizer_create(other, 0, 0n, null, cell), "optimizer");
  const orphanOpt = handle(cell);
  s.ql_ctx_destroy(other);
  assertInvalid(ctx, s.ql_qweight_info(orphan, info), "ql_qweight_info: the context of w was destroyed");
  const mem = new BigUint64Array(3);
  assertInvalid(ctx, s.ql_optimizer_memory(orphanOpt, mem), "ql_optimizer_memory: the context of opt was destroyed");
  s.ql_qweight_destroy(orphan);
  s.ql_optimizer_destroy(orphanOpt);
});

testEachBackend("memory that is not a handle (zeros, or a handle of another kind) is rejected", (ctx) => {
  const s = ctx.lib.symbols;
  const zeros = new Uint8Array(1024); // bigger than any handle, all zero
  const fake = Deno.UnsafePointer.of(zeros)!;
  assertInvalid(ctx, s.ql_sync(fake), "ql_sync: ctx is not a live ql_ctx");
  assertInvalid(ctx, s.ql_qweight_info(fake, new BigInt64Array(8)), "ql_qweight_info: w is not a live ql_qweight");
  assertInvalid(ctx, s.ql_optimizer_memory(fake, new BigUint64Array(3)), "ql_optimizer_memory: opt is not a live ql_optimizer");
  s.ql_ctx_destroy(fake);
  s.ql_qweight_destroy(fake);
  s.ql_optimizer_destroy(fake);
  assert.ok(zeros.every((b) => b === 0), "destroy wrote nothing into foreign memory");

  // a live handle of the wrong kind
  const cell = new BigUint64Array(1);
  ctx.lib.check(s.ql_optimizer_create(ctx.ptr, 0, 0n, null, cell), "optimizer");
  const opt = handle(cell);
  try {
    assertInvalid(ctx, s.ql_sync(opt), "ql_sync: ctx is not a live ql_ctx");
    assertInvalid(ctx, s.ql_qweight_info(opt, new BigInt64Array(8)), "ql_qweight_info: w is not a live ql_qweight");
    assertInvalid(ctx, s.ql_optimizer_memory(ctx.ptr, new BigUint64Array(3)), "opt is not a live ql_optimizer");
  } finally {
    s.ql_optimizer_destroy(opt);
  }
});
