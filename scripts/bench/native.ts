// native.ts — the `native` suite: kernels of the native library (CPU backend by default;
// QLORA_BACKEND / QLORA_LIB / QLORA_BUILD_DIR pick the library as in the tests), 2 threads,
// warm-up, median of several timed runs.
//   - small-M 4-bit matmul on SmolLM-135M's linears: 16 rows in one call vs 16 one-row calls, and
//     m = 4..32 against m = 1 (interleaved pairs, median ratio); SGMV LoRA: 16 adapters vs one
//   - fused 4-bit matvec (m = 1, nf4 + double quant): GB/s of packed codes + absmax read,
//     against a plain read of a buffer of the same size (shared/peers/readbw.c, same run)
//   - 4-bit matmul with 512 rows against oneDNN's dense GEMM on the dequantized weight
//   - multi-adapter LoRA: 16 rows naming 16 adapters (ranks 8..64) against 16 rows of one
//     adapter of the mean rank (ql_lora_forward)
//   - quantize / dequantize throughput in GB/s of float32
import type { Row } from "./main.ts";
import { readBandwidth } from "./peers.ts";
import { libraryPath } from "../../server/ffi/library.ts";
import { Context, type DeviceBuffer, DType, QWeight } from "../../server/ffi/tensor.ts";

const THREADS = 2;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median seconds per call of fn (calls per timed run chosen to last >= minMs). */
function timeIt(fn: () => void, runs = 7, minMs = 50): number {
  fn(); // warm-up
  let reps = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    const dt = performance.now() - t0;
    if (dt >= minMs || reps >= 1 << 16) break;
    reps *= 2;
  }
  const times: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    times.push((performance.now() - t0) / 1000 / reps);
  }
  return median(times);
}

function randomF32(n: number, seed: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    // sum of two uniforms: cheap, bell-shaped, zero mean
    const u = (s & 0xffff) / 65536 + (s >>> 16) / 65536 - 1;
    out[i] = u * std * 1.7;
  }
  return out;
}

function bf16Bits(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16;
  return out;
}

function openContext(): Context {
  const path = Deno.env.get("QLORA_LIB") ?? libraryPath((Deno.env.get("QLORA_BACKEND") ?? "cpu") as "cpu");
  return new Context({ libraryPath: path, threads: THREADS });
}

/**
 * Fused matvec (m = 1) on W [rows, cols] nf4 + double quant, in GB/s of packed codes + float32
 * absmax read, f32 activations (exact float32 kernel) and bf16 ones (int8 dot products on
 * AVX-512 VNNI). "cold": each call takes the next of enough copies of the weight that the working
 * set (>= 256 MiB) streams from DRAM, as a decode step over a whole model does; "hot": one weight
 * called repeatedly (it may stay in the last-level cache). Each is compared with a plain read
 * (shared/peers/readbw.c) of a buffer of the same total size, measured in the same run.
 */
async function matvecRows(ctx: Context, rows: number, cols: number): Promise<Row[]> {
  const s = ctx.lib.symbols;
  const bytes = rows * cols / 2 + Math.ceil(rows * cols / 64) * 4;
  const copies = Math.max(1, Math.ceil((256 << 20) / bytes));
  const ws: QWeight[] = [];
  const first = QWeight.quantize(ctx, randomF32(rows * cols, rows, 0.02), DType.F32, rows, cols, {
    quantType: "nf4",
    blocksize: 64,
    doubleQuant: true,
  });
  ws.push(first);
  const st = first.export();
  const code = new Float32Array(16);
  ctx.lib.check(s.ql_codebook(0, code), "ql_codebook");
  for (let c = 1; c < copies; c++) ws.push(QWeight.import(ctx, rows, cols, "nf4", 64, { ...st, code }));
  const xf = randomF32(cols, 7);
  using x32 = ctx.upload(xf);
  using x16 = ctx.upload(bf16Bits(xf));
  using y = ctx.alloc(rows * 4);
  const mibCold = Math.round((bytes * copies) / (1 << 20)), mibHot = Math.max(1, Math.round(bytes / (1 << 20)));
  const refCold = await readBandwidth(THREADS, mibCold, 9);
  const refHot = await readBandwidth(THREADS, mibHot, 15);
  const out: Row[] = [];
  for (const dtype of [DType.F32, DType.BF16]) {
    const x = dtype === DType.F32 ? x32 : x16;
    const call = (w: QWeight) => ctx.lib.check(s.ql_matmul_4bit(ctx.ptr, y.ptr, x.ptr, w.ptr, 1n, dtype, 0), "ql_matmul_4bit");
    let k = 0;
    const cold = timeIt(() => call(ws[k++ % copies]), 9);
    const hot = timeIt(() => call(first), 9);
    const dt = dtype === DType.F32 ? "f32" : "bf16";
    for (const [what, sec, ref, mib] of [["cold", cold, refCold, mibCold], ["hot", hot, refHot, mibHot]] as const) {
      out.push({
        name: `matvec nf4+dq ${rows}x${cols} m=1 ${dt} ${what} (read ${mib} MiB)`,
        ours: bytes / sec / 1e9,
        reference: ref,
        ratio: bytes / sec / 1e9 / ref,
        target: ">= 0.80",
        unit: "GB/s",
      });
    }
  }
  for (const w of ws) w.dispose();
  return out;
}

function gemmRows(ctx: Context, rows: number, cols: number, m: number, dtype: DType): Row {
  const s = ctx.lib.symbols;
  const esize = dtype === DType.F32 ? 4 : 2;
  using w = QWeight.quantize(ctx, randomF32(rows * cols, rows + 1, 0.02), DType.F32, rows, cols, {
    quantType: "nf4",
    blocksize: 64,
    doubleQuant: true,
  });
  const xf = randomF32(m * cols, 11);
  using x = ctx.upload(dtype === DType.F32 ? xf : bf16Bits(xf));
  using y = ctx.alloc(m * rows * esize);
  using wd: DeviceBuffer = ctx.alloc(rows * cols * esize);
  w.dequantizeInto(wd, dtype);
  const flops = 2 * m * rows * cols;
  const ours = timeIt(() => ctx.lib.check(s.ql_matmul_4bit(ctx.ptr, y.ptr, x.ptr, w.ptr, BigInt(m), dtype, 0), "ql_matmul_4bit"), 5, 1);
  const ref = timeIt(
    () =>
      ctx.lib.check(
        s.ql_gemm(ctx.ptr, y.ptr, dtype, x.ptr, dtype, wd.ptr, dtype, BigInt(m), BigInt(rows), BigInt(cols), 0, 1, 1, 0),
        "ql_gemm",
      ),
    5,
    1,
  );
  const g = (t: number) => flops / t / 1e9;
  return {
    name: `matmul_4bit ${m}x${cols} · (${rows}x${cols})ᵀ ${dtype === DType.F32 ? "f32" : "bf16"} vs dense gemm`,
    ours: g(ours),
    reference: g(ref),
    ratio: g(ours) / g(ref),
    target: ">= 0.80",
    unit: "GFLOP/s",
  };
}

function loraRows(ctx: Context): Row {
  const s = ctx.lib.symbols;
  const T = 16, inF = 4096, outF = 4096;
  const ranks = Array.from({ length: 16 }, (_, i) => 8 * (1 + (i % 8))); // 8..64, mean 36
  const meanRank = ranks.reduce((a, b) => a + b, 0) / ranks.length;
  const bufs: DeviceBuffer[] = [];
  const aPtrs = new BigUint64Array(16), bPtrs = new BigUint64Array(16);
  for (let a = 0; a < 16; a++) {
    const A = ctx.upload(randomF32(ranks[a] * inF, 100 + a, 0.02)), B = ctx.upload(randomF32(outF * ranks[a], 200 + a, 0.02));
    bufs.push(A, B);
    aPtrs[a] = BigInt(Deno.UnsafePointer.value(A.ptr));
    bPtrs[a] = BigInt(Deno.UnsafePointer.value(B.ptr));
  }
  using x = ctx.upload(randomF32(T * inF, 5));
  using y = ctx.alloc(T * outF * 4, true);
  const rowAdapter = Int32Array.from({ length: T }, (_, t) => t);
  const rk = Int32Array.from(ranks), sc = new Float32Array(16).fill(2);
  const ours = timeIt(
    () =>
      ctx.lib.check(
        s.ql_lora_multi_forward(
          ctx.ptr,
          y.ptr,
          x.ptr,
          rowAdapter,
          aPtrs,
          bPtrs,
          rk,
          sc,
          16n,
          BigInt(T),
          BigInt(inF),
          BigInt(outF),
          DType.F32,
        ),
        "ql_lora_multi_forward",
      ),
    9,
  );
  using A1 = ctx.upload(randomF32(meanRank * inF, 300, 0.02));
  using B1 = ctx.upload(randomF32(outF * meanRank, 301, 0.02));
  const ref = timeIt(
    () =>
      ctx.lib.check(
        s.ql_lora_forward(
          ctx.ptr,
          y.ptr,
          null,
          x.ptr,
          A1.ptr,
          B1.ptr,
          BigInt(T),
          BigInt(inF),
          BigInt(outF),
          BigInt(meanRank),
          2,
          0,
          0n,
          DType.F32,
        ),
        "ql_lora_forward",
      ),
    9,
  );
  for (const b of bufs) b.dispose();
  return {
    name: `lora multi 16 rows/16 adapters (r 8..64) vs 1 adapter r=${meanRank}, ${inF}->${outF}`,
    ours: ours * 1e6,
    reference: ref * 1e6,
    ratio: ours / ref,
    target: "<= 1.10",
    unit: "us",
  };
}

/** Interleaved pairs (A B A B ..., so machine noise hits both alike): the median time (ms) of
 * each and the median of the per-pair ratios a / b. */
function pairs(a: () => number, b: () => number, n = 9): { a: number; b: number; ratio: number } {
  a(), b(); // warm-up
  const ta: number[] = [], tb: number[] = [], r: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a(), y = b();
    ta.push(x), tb.push(y), r.push(x / y);
  }
  return { a: median(ta), b: median(tb), ratio: median(r) };
}

const SMOL = { hidden: 576, intermediate: 1536, kv: 192, layers: 30 };

/** The linears of SmolLM-135M's 30 layers (q, k, v, o, gate, up, down; nf4 + double quant, each
 * layer its own copy: ~50 MiB, cold as in a decode step) and a sweep over them with m rows. */
function smolLinears(ctx: Context) {
  const s = ctx.lib.symbols;
  const { hidden: H, intermediate: I, kv: KV } = SMOL;
  const shapes: [number, number][] = [[H, H], [KV, H], [KV, H], [H, H], [I, H], [I, H], [H, I]];
  const ws: QWeight[] = [];
  for (let l = 0; l < SMOL.layers; l++) {
    for (const [r, c] of shapes) {
      ws.push(QWeight.quantize(ctx, randomF32(r * c, 1000 + ws.length, 0.02), DType.F32, r, c, {
        quantType: "nf4",
        blocksize: 64,
        doubleQuant: true,
      }));
    }
  }
  const M = 32;
  const xf = randomF32(M * I, 17);
  const x32 = ctx.upload(xf), x16 = ctx.upload(bf16Bits(xf)), y = ctx.alloc(M * I * 4);
  /** ms for one sweep: every weight with m rows, `calls` times (call k on rows k·m ..). */
  const sweep = (dtype: DType, m: number, calls = 1) => {
    const x = dtype === DType.F32 ? x32 : x16, es = dtype === DType.F32 ? 4 : 2;
    const t0 = performance.now();
    for (const w of ws) {
      const cols = w.info.cols, rows = w.info.rows;
      for (let k = 0; k < calls; k++) {
        const xp = k > 0 ? Deno.UnsafePointer.offset(x.ptr!, k * m * cols * es) : x.ptr;
        const yp = k > 0 ? Deno.UnsafePointer.offset(y.ptr!, k * m * rows * es) : y.ptr;
        ctx.lib.check(s.ql_matmul_4bit(ctx.ptr, yp, xp, w.ptr, BigInt(m), dtype, 0), "ql_matmul_4bit");
      }
    }
    return performance.now() - t0;
  };
  const dispose = () => {
    for (const w of ws) w.dispose();
    x32.dispose(), x16.dispose(), y.dispose();
  };
  return { sweep, dispose };
}

/**
 * Small-M 4-bit matmul on SmolLM-135M's linear shapes (see smolLinears): 16 rows in one call vs
 * the same 16 rows as 16 one-row calls (the GEMV), and m = 4, 8, 16, 32 rows against m = 1
 * (target at 16 rows: <= 2x for bf16), as interleaved pairs. With QLORA_BENCH_BASELINE_LIB=path
 * (an older build of the library), also m = 16 here against m = 16 there, interleaved.
 */
function smallMRows(ctx: Context): Row[] {
  const lin = smolLinears(ctx);
  const out: Row[] = [];
  const name = (dt: string, what: string) => `smollm-135m linears x30 nf4+dq ${dt}: ${what}`;
  const baselinePath = Deno.env.get("QLORA_BENCH_BASELINE_LIB");
  const baseCtx = baselinePath ? new Context({ libraryPath: baselinePath, threads: THREADS }) : null;
  const base = baseCtx ? smolLinears(baseCtx) : null;
  try {
    for (const dtype of [DType.F32, DType.BF16]) {
      const dt = dtype === DType.F32 ? "f32" : "bf16";
      const p = pairs(() => lin.sweep(dtype, 16), () => lin.sweep(dtype, 1, 16));
      out.push({
        name: name(dt, "16 rows in one call vs 16 one-row calls (ms per sweep, ratio of pairs)"),
        ours: p.a,
        reference: p.b,
        ratio: p.ratio,
        target: "<= 0.50",
        unit: "ms",
      });
      for (const m of [4, 8, 16, 32]) {
        const q = pairs(() => lin.sweep(dtype, m), () => lin.sweep(dtype, 1));
        out.push({
          name: name(dt, `m=${m} vs m=1 (time ratio)`),
          ours: q.a,
          reference: q.b,
          ratio: q.ratio,
          target: m === 16 && dtype === DType.BF16 ? "<= 2.0" : null,
          unit: "ms",
        });
      }
      if (base) {
        for (const m of [1, 16]) {
          const q = pairs(() => lin.sweep(dtype, m), () => base.sweep(dtype, m));
          out.push({
            name: name(dt, `m=${m}, this build vs the baseline library`),
            ours: q.a,
            reference: q.b,
            ratio: q.ratio,
            target: null,
            unit: "ms",
          });
        }
      }
    }
  } finally {
    lin.dispose();
    base?.dispose();
    baseCtx?.dispose();
  }
  return out;
}

/**
 * Multi-adapter LoRA (SGMV) on SmolLM-135M's q shape (576 -> 576, r 16 as the serve suite's
 * adapters), 16 rows: 16 rows on 16 adapters (rows interleaved: adapter t % 16) against 16 rows
 * on one adapter, both through ql_lora_multi_forward, interleaved pairs of sweeps over 30 layers
 * x 7 modules' worth of calls (each module its own adapter weights, so they stream from memory).
 */
function sgmvRows(ctx: Context): Row {
  const s = ctx.lib.symbols;
  const T = 16, inF = SMOL.hidden, outF = SMOL.hidden, r = 16, calls = SMOL.layers * 7;
  const bufs: DeviceBuffer[] = [];
  const mk = (n: number) => {
    const a = new BigUint64Array(n), b = new BigUint64Array(n);
    for (let i = 0; i < n; i++) {
      const A = ctx.upload(randomF32(r * inF, 100 + bufs.length, 0.02)), B = ctx.upload(randomF32(outF * r, 200 + bufs.length, 0.02));
      bufs.push(A, B);
      a[i] = BigInt(Deno.UnsafePointer.value(A.ptr));
      b[i] = BigInt(Deno.UnsafePointer.value(B.ptr));
    }
    return { a, b };
  };
  const many = Array.from({ length: calls }, () => mk(16)), one = Array.from({ length: calls }, () => mk(1));
  using x = ctx.upload(randomF32(T * inF, 5));
  using y = ctx.alloc(T * outF * 4, true);
  const rowsMany = Int32Array.from({ length: T }, (_, t) => t % 16), rowsOne = new Int32Array(T);
  const rk = new Int32Array(16).fill(r), sc = new Float32Array(16).fill(2);
  const sweep = (sets: { a: BigUint64Array; b: BigUint64Array }[], rowAdapter: Int32Array) => {
    const t0 = performance.now();
    for (const set of sets) {
      ctx.lib.check(
        s.ql_lora_multi_forward(
          ctx.ptr,
          y.ptr,
          x.ptr,
          rowAdapter,
          set.a,
          set.b,
          rk,
          sc,
          BigInt(set.a.length),
          BigInt(T),
          BigInt(inF),
          BigInt(outF),
          DType.F32,
        ),
        "ql_lora_multi_forward",
      );
    }
    return performance.now() - t0;
  };
  const p = pairs(() => sweep(many, rowsMany), () => sweep(one, rowsOne));
  for (const b of bufs) b.dispose();
  return {
    name: `lora multi (SGMV) ${calls} calls of 16 rows ${inF}->${outF} r=${r}: 16 adapters vs 1 adapter`,
    ours: p.a,
    reference: p.b,
    ratio: p.ratio,
    target: "<= 1.10",
    unit: "ms",
  };
}

function quantRows(ctx: Context): Row[] {
  const s = ctx.lib.symbols;
  const n = 1 << 24;
  using x = ctx.upload(randomF32(n, 3));
  using p = ctx.alloc(n / 2);
  using a = ctx.alloc((n / 64) * 4);
  using o = ctx.alloc(n * 4);
  const q = timeIt(() => ctx.lib.check(s.ql_quantize_4bit(ctx.ptr, p.ptr, a.ptr, x.ptr, BigInt(n), 64, 0), "ql_quantize_4bit"), 5);
  const d = timeIt(() => ctx.lib.check(s.ql_dequantize_4bit(ctx.ptr, o.ptr, p.ptr, a.ptr, BigInt(n), 64, 0), "ql_dequantize_4bit"), 5);
  return [
    { name: "quantize nf4 bs64 (16M f32)", ours: (n * 4) / q / 1e9, reference: null, ratio: null, target: null, unit: "GB/s f32" },
    { name: "dequantize nf4 bs64 (16M f32)", ours: (n * 4) / d / 1e9, reference: null, ratio: null, target: null, unit: "GB/s f32" },
  ];
}

export async function run(): Promise<Row[]> {
  using ctx = openContext();
  const rows: Row[] = [];
  if (Deno.env.get("QLORA_BENCH_ONLY") === "smallm") return [...smallMRows(ctx), sgmvRows(ctx)];
  rows.push(...smallMRows(ctx), sgmvRows(ctx));
  for (const [r, c] of [[11008, 4096], [5632, 2048]]) rows.push(...await matvecRows(ctx, r, c));
  rows.push(gemmRows(ctx, 11008, 4096, 512, DType.BF16));
  rows.push(gemmRows(ctx, 5632, 2048, 512, DType.F32));
  rows.push(loraRows(ctx));
  rows.push(...quantRows(ctx));
  return rows;
}
