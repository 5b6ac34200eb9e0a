// optim_test.ts — AdamW (bitsandbytes' 32-bit rule) against a float64 reference, paged AdamW
// under a budget equal to AdamW bit for bit, 8-bit blockwise AdamW close to 32-bit, state
// access, memory accounting and bad arguments.
import assert from "node:assert/strict";
import { testEachBackend } from "./backends.ts";
import { Rng } from "./rng.ts";
import type { Context } from "../../server/ffi/tensor.ts";
import { NativeError } from "../../server/ffi/errors.ts";

const KIND = { adamw: 0, paged: 1, paged8: 2 } as const;

interface Hyper {
  lr: number;
  b1: number;
  b2: number;
  eps: number;
  wd: number;
  gs: number;
}
const H: Hyper = { lr: 1e-2, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.01, gs: 0.5 };

class Optimizer implements Disposable {
  ptr: Deno.PointerObject;
  constructor(readonly ctx: Context, kind: number, budget = 0, spillDir: string | null = null) {
    const cell = new BigUint64Array(1);
    const dir = spillDir === null ? null : new TextEncoder().encode(spillDir + "\0");
    ctx.lib.check(ctx.lib.symbols.ql_optimizer_create(ctx.ptr, kind, BigInt(budget), dir, cell), "ql_optimizer_create");
    this.ptr = Deno.UnsafePointer.create(cell[0])!;
  }
  add(n: number): number {
    const out = new BigInt64Array(1);
    this.ctx.lib.check(this.ctx.lib.symbols.ql_optimizer_add(this.ptr, BigInt(n), out), "ql_optimizer_add");
    return Number(out[0]);
  }
  step(index: number, p: Float32Array, g: Float32Array, step: number, h: Hyper = H): void {
    using dp = this.ctx.upload(p);
    using dg = this.ctx.upload(g);
    this.ctx.lib.check(
      this.ctx.lib.symbols.ql_optimizer_step(this.ptr, BigInt(index), dp.ptr, dg.ptr, h.lr, h.b1, h.b2, h.eps, h.wd, h.gs, BigInt(step)),
      "ql_optimizer_step",
    );
    p.set(dp.readF32(0, p.length));
  }
  state(index: number, n: number): { m: Float32Array; v: Float32Array } {
    const m = new Float32Array(n), v = new Float32Array(n);
    this.ctx.lib.check(this.ctx.lib.symbols.ql_optimizer_get_state(this.ptr, BigInt(index), m, v), "ql_optimizer_get_state");
    return { m, v };
  }
  memory(): number[] {
    const out = new BigUint64Array(3);
    this.ctx.lib.check(this.ctx.lib.symbols.ql_optimizer_memory(this.ptr, out), "ql_optimizer_memory");
    return Array.from(out, Number);
  }
  [Symbol.dispose](): void {
    this.ctx.lib.symbols.ql_optimizer_destroy(this.ptr);
  }
}

/** bitsandbytes' 32-bit AdamW step in float64. */
function adamRef(p: Float64Array, m: Float64Array, v: Float64Array, g: ArrayLike<number>, t: number, h64: Hyper): void {
  // the hyperparameters as the float32 values the native call receives
  const f = Math.fround;
  const h = { lr: f(h64.lr), b1: f(h64.b1), b2: f(h64.b2), eps: f(h64.eps), wd: f(h64.wd), gs: f(h64.gs) };
  const c1 = 1 - h.b1 ** t, c2 = Math.sqrt(1 - h.b2 ** t);
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * h.gs;
    m[i] = h.b1 * m[i] + (1 - h.b1) * gi;
    v[i] = h.b2 * v[i] + (1 - h.b2) * gi * gi;
    p[i] *= 1 - h.lr * h.wd;
    p[i] -= (h.lr * c2 / c1) * m[i] / (Math.sqrt(v[i]) + h.eps * c2);
  }
}

testEachBackend("AdamW follows bitsandbytes' 32-bit rule (float64 reference)", (ctx) => {
  const rng = new Rng(301);
  using opt = new Optimizer(ctx, KIND.adamw);
  const sizes = [1, 17, 5000];
  const ps = sizes.map((n) => rng.normalF32(n));
  const refs = ps.map((p) => ({ p: Float64Array.from(p), m: new Float64Array(p.length), v: new Float64Array(p.length) }));
  const idx = sizes.map((n) => opt.add(n));
  assert.deepEqual(idx, [0, 1, 2]);
  for (let t = 1; t <= 6; t++) {
    for (let k = 0; k < sizes.length; k++) {
      const g = rng.normalF32(sizes[k], t === 3 ? 1e-4 : 1); // a tiny-gradient step too
      opt.step(idx[k], ps[k], g, t);
      adamRef(refs[k].p, refs[k].m, refs[k].v, g, t, H);
    }
  }
  for (let k = 0; k < sizes.length; k++) {
    for (let i = 0; i < sizes[k]; i++) {
      // float32 arithmetic: a few ulps of p, plus a few ulps of the accumulated update
      assert.ok(
        Math.abs(ps[k][i] - refs[k].p[i]) <= 2e-6 * Math.abs(refs[k].p[i]) + 6 * H.lr * 1e-5,
        `tensor ${k} element ${i}: ${ps[k][i]} vs ${refs[k].p[i]}`,
      );
    }
    const st = opt.state(idx[k], sizes[k]);
    for (let i = 0; i < sizes[k]; i++) {
      // m can cancel towards 0: absolute slack of float32 rounding of its O(0.5) terms
      assert.ok(Math.abs(st.m[i] - refs[k].m[i]) <= 1e-5 * Math.abs(refs[k].m[i]) + 1e-7, `m ${k} ${i}: ${st.m[i]} vs ${refs[k].m[i]}`);
      assert.ok(Math.abs(st.v[i] - refs[k].v[i]) <= 1e-5 * Math.abs(refs[k].v[i]) + 1e-12, `v ${k} ${i}: ${st.v[i]} vs ${refs[k].v[i]}`);
    }
  }
  const [total, resident, peak] = opt.memory();
  assert.equal(total, 8 * (1 + 17 + 5000));
  assert.equal(resident, total);
  assert.equal(peak, total);
});

testEachBackend("paged AdamW under a budget smaller than its state equals AdamW bit for bit", async (ctx, backend) => {
  const rng = new Rng(302);
  const dir = await Deno.makeTempDir({ prefix: "qlora_spill_" });
  try {
    const sizes = [1000, 5000, 300, 7000, 64];
    const total = 8 * sizes.reduce((a, b) => a + b, 0);
    const budget = 12000; // fits tensors 0 and 2 (8000 + 2400 bytes), the rest spill
    using plain = new Optimizer(ctx, KIND.adamw);
    using paged = new Optimizer(ctx, KIND.paged, budget, dir);
    const ia = sizes.map((n) => plain.add(n));
    const ib = sizes.map((n) => paged.add(n));
    // the spill file is unlinked right after creation
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    const pa = sizes.map((n) => rng.normalF32(n));
    const pb = pa.map((p) => p.slice());
    for (let t = 1; t <= 5; t++) {
      for (let k = sizes.length - 1; k >= 0; k--) { // reverse order: the prefetch guess misses
        const g = rng.normalF32(sizes[k]);
        plain.step(ia[k], pa[k], g, t);
        paged.step(ib[k], pb[k], g, t);
      }
    }
    for (let k = 0; k < sizes.length; k++) {
      assert.deepEqual(new Uint32Array(pb[k].buffer), new Uint32Array(pa[k].buffer), `params of tensor ${k}`);
      const sa = plain.state(ia[k], sizes[k]), sb = paged.state(ib[k], sizes[k]);
      assert.deepEqual(new Uint32Array(sb.m.buffer), new Uint32Array(sa.m.buffer));
      assert.deepEqual(new Uint32Array(sb.v.buffer), new Uint32Array(sa.v.buffer));
    }
    const [tot, resident, peak] = paged.memory();
    assert.equal(tot, total);
    assert.ok(resident <= budget, `resident ${resident} over the budget ${budget}`);
    assert.ok(peak >= resident && peak <= total);
    if (backend === "cpu") {
      // tensors placed in registration order while they fit; a spilled tensor counts as resident
      // while it steps
      assert.equal(resident, 8 * (1000 + 300 + 64));
      assert.equal(peak, resident + 8 * 7000, "peak: resident state plus the largest spilled tensor while it steps");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

testEachBackend("8-bit blockwise AdamW stays close to 32-bit AdamW", (ctx, backend) => {
  const rng = new Rng(303);
  const n = 3000; // not a multiple of the 256 block
  using a32 = new Optimizer(ctx, KIND.adamw);
  using a8 = new Optimizer(ctx, KIND.paged8, 1000); // most of it spilled as well
  const i32 = a32.add(n), i8 = a8.add(n);
  const p0 = rng.normalF32(n);
  const p32 = p0.slice(), p8 = p0.slice();
  const h = { ...H, lr: 1e-3 };
  const gbias = rng.normalF32(n);
  for (let t = 1; t <= 20; t++) {
    const g = rng.normalF32(n).map((v, i) => v * 0.5 + gbias[i]);
    a32.step(i32, p32, g, t, h);
    a8.step(i8, p8, g, t, h);
  }
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) {
    num += (p8[i] - p32[i]) ** 2;
    den += (p32[i] - p0[i]) ** 2;
  }
  const rel = Math.sqrt(num / den);
  assert.ok(rel < 0.05, `8-bit update differs from 32-bit by ${rel} (relative rms)`);
  const s32 = a32.state(i32, n), s8 = a8.state(i8, n);
  let em = 0, nm = 0;
  for (let i = 0; i < n; i++) {
    em += (s8.m[i] - s32.m[i]) ** 2;
    nm += s32.m[i] ** 2;
  }
  assert.ok(Math.sqrt(em / nm) < 0.05, `m differs by ${Math.sqrt(em / nm)}`);
  const [total] = a8.memory();
  if (backend === "cpu") assert.equal(total, 2 * n + 8 * Math.ceil(n / 256)); // codes + two absmax per 256
  assert.ok(total < 8 * n / 3, `8-bit state takes ${total} bytes for ${n} parameters`);
});

testEachBackend("optimizer state can be written and read back", (ctx) => {
  const rng = new Rng(304);
  for (const kind of [KIND.adamw, KIND.paged, KIND.paged8]) {
    using opt = new Optimizer(ctx, kind, 100);
    const n = 700;
    const idx = opt.add(n);
    const m = rng.normalF32(n), v = rng.normalF32(n).map(Math.abs);
    ctx.lib.check(ctx.lib.symbols.ql_optimizer_set_state(opt.ptr, BigInt(idx), m, v), "ql_optimizer_set_state");
    const st = opt.state(idx, n);
    if (kind === KIND.paged8) {
      const am = Math.max(...m.map(Math.abs)), av = Math.max(...v);
      for (let i = 0; i < n; i++) {
        assert.ok(Math.abs(st.m[i] - m[i]) <= 0.05 * Math.abs(m[i]) + 0.01 * am, `m ${i}`);
        assert.ok(Math.abs(st.v[i] - v[i]) <= 0.05 * v[i] + 0.01 * av, `v ${i}`);
      }
    } else {
      assert.deepEqual(st.m, m);
      assert.deepEqual(st.v, v);
    }
  }
});

testEachBackend("optimizer: bad arguments are rejected with a message", (ctx) => {
  const s = ctx.lib.symbols;
  const expect = (status: number, fn: string, pattern: RegExp) =>
    assert.throws(() => ctx.lib.check(status, fn), (e: unknown) => e instanceof NativeError && e.status === 1 && pattern.test(e.message));
  expect(s.ql_optimizer_create(ctx.ptr, 7, 0n, null, new BigUint64Array(1)), "ql_optimizer_create", /kind must be/);
  using opt = new Optimizer(ctx, KIND.adamw);
  opt.add(4);
  using b = ctx.alloc(64);
  expect(
    s.ql_optimizer_step(opt.ptr, 1n, b.ptr, b.ptr, 1e-3, 0.9, 0.999, 1e-8, 0, 1, 1n),
    "ql_optimizer_step",
    /index 1 is not a registered tensor/,
  );
  expect(s.ql_optimizer_step(opt.ptr, 0n, b.ptr, b.ptr, 1e-3, 1, 0.999, 1e-8, 0, 1, 1n), "ql_optimizer_step", /beta1/);
  expect(s.ql_optimizer_step(opt.ptr, 0n, b.ptr, b.ptr, 1e-3, 0.9, 0.999, 1e-8, 0, 1, 0n), "ql_optimizer_step", /step must be >= 1/);
  expect(s.ql_optimizer_add(opt.ptr, 0n, new BigInt64Array(1)), "ql_optimizer_add", /n must be > 0/);
});
