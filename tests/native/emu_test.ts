// emu_test.ts — the CUDA emulation (libqlora_cudaemu.so) catches the bug class it exists for:
// a kernel that forgets __syncthreads() or indexes shared memory wrongly gives wrong results
// under emulation, while the correct kernel gives the right one. Also checks the emulated warp
// collectives, atomics across parallel blocks and WMMA. Uses the library's test-only
// qlemu_selftest_* entry points (not part of qlora.h) through a separate Deno.dlopen.
import assert from "node:assert/strict";
import { libraryPath } from "../../server/ffi/library.ts";
import { backendsUnderTest } from "./backends.ts";
import { Rng } from "./rng.ts";

const path = Deno.env.get("QLORA_BACKEND") === "cudaemu" && Deno.env.get("QLORA_LIB") ? Deno.env.get("QLORA_LIB")! : libraryPath("cudaemu");
const available = backendsUnderTest().includes("cudaemu") && (() => {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
})();

const symbols = {
  qlemu_selftest_set_reverse: { parameters: ["i32"], result: "void" },
  qlemu_selftest_set_check: { parameters: ["i32"], result: "void" },
  qlemu_selftest_reverse: { parameters: ["buffer", "buffer", "i32", "i32"], result: "i32" },
  qlemu_selftest_sum: { parameters: ["buffer", "buffer", "i64", "i32", "i32"], result: "i32" },
  qlemu_selftest_warp: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  qlemu_selftest_wmma: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
} as const;

// Opened once and never closed: the emulation's OpenMP worker threads outlive a launch.
let lib: Deno.DynamicLibrary<typeof symbols> | null = null;
function withLib(fn: (s: Deno.DynamicLibrary<typeof symbols>["symbols"]) => void) {
  lib ??= Deno.dlopen(path, symbols);
  fn(lib.symbols);
}

function reverse(s: Deno.DynamicLibrary<typeof symbols>["symbols"], input: Float32Array, variant: number): Float32Array {
  const out = new Float32Array(input.length);
  assert.equal(s.qlemu_selftest_reverse(out, input, input.length, variant), 0);
  return out;
}

Deno.test({
  name: "cudaemu: a correct shared-memory kernel is right; a missing __syncthreads() or a wrong shared index is caught",
  ignore: !available,
  fn: () =>
    withLib((s) => {
      // both thread orders (forward: low threads first; reverse: high threads first)
      for (const order of [0, 1]) {
        s.qlemu_selftest_set_reverse(order);
        try {
          for (const n of [32, 100, 256, 1024]) {
            const input = new Float32Array(n).map((_, i) => i + 0.5);
            const want = input.slice().reverse();
            assert.deepEqual(reverse(s, input, 0), want, `correct kernel, n=${n}, order ${order}`);
            const noSync = reverse(s, input, 1);
            assert.notDeepEqual(noSync, want, `missing __syncthreads() must not pass, n=${n}, order ${order}`);
            // a read before the write shows the poison pattern (0xFFFFFFFF = NaN), not stale data
            const first = order === 0 ? 0 : n - 1; // the thread that runs first read an unwritten slot
            assert.ok(Number.isNaN(noSync[first]), `thread ${first} read an unwritten shared slot: ${noSync[first]}`);
            const badIndex = reverse(s, input, 2);
            assert.notDeepEqual(badIndex, want, `wrong shared index must not pass, n=${n}, order ${order}`);
            assert.ok(Number.isNaN(badIndex[0]), "tile[n] was never written");
          }
        } finally {
          s.qlemu_selftest_set_reverse(Deno.env.get("QL_EMU_SCHEDULE") === "reverse" ? 1 : 0);
        }
      }
    }),
});

Deno.test({
  name: "cudaemu: threads waiting in different __syncthreads() calls fail the launch",
  ignore: !available,
  fn: () =>
    withLib((s) => {
      const n = 64;
      const input = new Float32Array(n).map((_, i) => i);
      const out = new Float32Array(n);
      try {
        s.qlemu_selftest_set_check(1);
        assert.equal(s.qlemu_selftest_reverse(out, input, n, 3), 719, "cudaErrorLaunchFailure");
        assert.equal(s.qlemu_selftest_reverse(out, input, n, 0), 0, "the error does not stick");
        s.qlemu_selftest_set_check(0);
        assert.equal(s.qlemu_selftest_reverse(out, input, n, 3), 0, "QL_EMU_CHECK=0 lets it through");
      } finally {
        s.qlemu_selftest_set_check(Deno.env.get("QL_EMU_CHECK") === "0" ? 0 : 1);
      }
    }),
});

Deno.test({
  name: "cudaemu: block reduction with shuffles + atomicAdd across parallel blocks",
  ignore: !available,
  fn: () =>
    withLib((s) => {
      const rng = new Rng(9);
      for (const [n, blocks, threads] of [[1, 1, 32], [1000, 3, 64], [100000, 37, 256], [5000, 64, 1024]]) {
        const x = rng.normalF32(n);
        const out = new Float32Array(1);
        assert.equal(s.qlemu_selftest_sum(out, x, BigInt(n), blocks, threads), 0);
        let want = 0;
        for (const v of x) want += v;
        assert.ok(Math.abs(out[0] - want) <= 1e-4 * Math.sqrt(n) + 1e-5, `n=${n}: ${out[0]} vs ${want}`);
      }
    }),
});

Deno.test({
  name: "cudaemu: warp votes and shuffles",
  ignore: !available,
  fn: () =>
    withLib((s) => {
      const pred = new Int32Array(32).map((_, i) => (i % 3 === 0 ? 1 : 0));
      const vals = new Int32Array(32).map((_, i) => 100 + i);
      const out = new Uint32Array(99);
      assert.equal(s.qlemu_selftest_warp(out, pred, vals), 0);
      let ballot = 0;
      for (let i = 0; i < 32; i++) if (pred[i]) ballot |= 1 << i;
      assert.equal(out[0], ballot >>> 0);
      assert.equal(out[1], 1);
      assert.equal(out[2], 0);
      for (let i = 0; i < 32; i++) {
        assert.equal(out[3 + i], i < 31 ? 101 + i : 100 + i, `shfl_down lane ${i}`);
        assert.equal(out[35 + i], 105, `shfl lane ${i}`);
        assert.equal(out[67 + i], 100 + (i ^ 3), `shfl_xor lane ${i}`);
      }
    }),
});

function bf16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
function fromBf16(h: number): number {
  return new Float32Array(new Uint32Array([h << 16]).buffer)[0];
}

Deno.test({
  name: "cudaemu: WMMA bf16 16x16x16 with f32 accumulation",
  ignore: !available,
  fn: () =>
    withLib((s) => {
      const rng = new Rng(10);
      const a = Uint16Array.from(rng.normalF32(256), bf16), b = Uint16Array.from(rng.normalF32(256), bf16);
      const c = new Float32Array(256);
      assert.equal(s.qlemu_selftest_wmma(c, a, b), 0);
      for (let i = 0; i < 16; i++) {
        for (let j = 0; j < 16; j++) {
          let want = 0;
          for (let k = 0; k < 16; k++) want += fromBf16(a[i * 16 + k]) * fromBf16(b[k * 16 + j]);
          assert.ok(Math.abs(c[i * 16 + j] - want) <= 1e-5 * (1 + Math.abs(want)), `(${i}, ${j}): ${c[i * 16 + j]} vs ${want}`);
        }
      }
    }),
});

// The real CUDA library (built wherever nvcc exists) must refuse a context cleanly on a machine
// without a GPU: QL_E_BACKEND (4) and a message naming the cause, no crash.
const cudaPath = libraryPath("cuda");
const noGpu = (() => {
  try {
    Deno.statSync("/dev/nvidia0");
    return false;
  } catch {
    return true;
  }
})();
const cudaBuilt = (() => {
  try {
    return Deno.statSync(cudaPath).isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "cuda library without a device: ql_ctx_create fails with QL_E_BACKEND and a clear message",
  ignore: !(noGpu && cudaBuilt && available),
  fn: () => {
    const lib = Deno.dlopen(
      cudaPath,
      {
        ql_backend_name: { parameters: [], result: "pointer" },
        ql_ctx_create: { parameters: ["i32", "i32", "buffer"], result: "i32" },
        ql_last_error: { parameters: [], result: "pointer" },
      } as const,
    );
    const name = Deno.UnsafePointerView.getCString(lib.symbols.ql_backend_name()!);
    assert.equal(name, "cuda");
    const cell = new BigUint64Array(1);
    const status = lib.symbols.ql_ctx_create(1, 0, cell);
    const msg = Deno.UnsafePointerView.getCString(lib.symbols.ql_last_error()!);
    assert.equal(status, 4, msg);
    assert.equal(cell[0], 0n);
    assert.match(msg, /no CUDA device/);
    // not closed: the CUDA runtime may keep threads
  },
});
