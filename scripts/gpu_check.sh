#!/usr/bin/env bash
# gpu_check.sh — on a machine with an NVIDIA GPU: build the CUDA backend for that GPU's
# architecture, run the native op suite on it (QLORA_BACKEND=cuda), run the native benchmarks and
# print a table: GB/s of the fused 4-bit matvec (decode) against the device's copy bandwidth
# measured in the same run, and TFLOP/s of the 4-bit matmul (prefill) and the dense GEMM against
# the tensor-core peak (dense bf16, SMs x max SM clock x FLOP/clock/SM of the architecture).
#
#   scripts/gpu_check.sh            build + tests + benchmarks (needs nvidia-smi and a GPU)
#   scripts/gpu_check.sh --bench    benchmarks only (library already built)
#   scripts/gpu_check.sh --emu      smoke-runs the benchmark code on the cudaemu library with
#                                   tiny shapes (no GPU needed; numbers are meaningless)
# Environment: BUILD (default /tmp/qlora_gpu_build), JOBS (default nproc).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-/tmp/qlora_gpu_build}"
JOBS="${JOBS:-$(nproc)}"
MODE="${1:-all}"

BENCH_TS="$(mktemp --suffix=.ts)"
trap 'rm -f "$BENCH_TS"' EXIT
cat > "$BENCH_TS" <<'TS'
import { Context, DType, QWeight } from "ROOT/server/ffi/tensor.ts";
const [libPath, scaleArg, peakArg] = Deno.args;
const small = scaleArg === "tiny";
const peakTflops = Number(peakArg || "0");
const ctx = new Context({ libraryPath: libPath, threads: 2 });
const s = ctx.lib.symbols;
const chk = (st: number, fn: string) => ctx.lib.check(st, fn);
function time(iters: number, fn: () => void): number {
  fn(); // warm-up
  ctx.sync();
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) fn();
  ctx.sync();
  return (performance.now() - t0) / 1e3 / iters;
}
function randBytes(n: number): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(a.subarray(i, Math.min(n, i + 65536)));
  return a;
}
const rows: string[][] = [["benchmark", "shape", "time/iter", "rate", "vs reference"]];
// copy bandwidth: device-to-device copy, read + write bytes
const copyBytes = small ? 1 << 20 : 1 << 30;
using src = ctx.alloc(copyBytes, true);
using dst = ctx.alloc(copyBytes, true);
const tc = time(small ? 2 : 20, () => chk(s.ql_copy_device(ctx.ptr, dst.ptr, src.ptr, BigInt(copyBytes)), "copy"));
const copyGBs = (2 * copyBytes) / tc / 1e9;
rows.push(["device copy (D2D)", `${copyBytes >> 20} MiB`, `${(tc * 1e3).toFixed(3)} ms`, `${copyGBs.toFixed(0)} GB/s`, "reference"]);
const code = new Float32Array(16);
chk(s.ql_codebook(0, code), "codebook");
for (const [R, C] of small ? [[256, 512]] : [[4096, 4096], [14336, 4096], [4096, 14336], [128256, 4096]]) {
  const nb = (R * C) / 64;
  const absmax = new Float32Array(nb).map(() => 0.01 + Math.random() * 0.05);
  using w = QWeight.import(ctx, R, C, "nf4", 64, { packed: randBytes((R * C) / 2), absmax, code });
  for (const m of [1, 4]) {
    using x = ctx.alloc(m * C * 2, true);
    using y = ctx.alloc(m * R * 2, true);
    const t = time(small ? 2 : 50, () => chk(s.ql_matmul_4bit(ctx.ptr, y.ptr, x.ptr, w.ptr, BigInt(m), DType.BF16, 0), "matvec"));
    const bytes = (R * C) / 2 + nb * 4 + m * (R + C) * 2;
    const gbs = bytes / t / 1e9;
    rows.push([`4-bit matvec m=${m} (bf16)`, `${R}x${C}`, `${(t * 1e6).toFixed(1)} us`, `${gbs.toFixed(1)} GB/s`, `${((100 * gbs) / copyGBs).toFixed(0)}% of copy`]);
  }
  if (R > 20000) continue;
  const M = small ? 64 : 4096;
  using x = ctx.alloc(M * C * 2, true);
  using y = ctx.alloc(M * R * 2, true);
  const t = time(small ? 1 : 5, () => chk(s.ql_matmul_4bit(ctx.ptr, y.ptr, x.ptr, w.ptr, BigInt(M), DType.BF16, 0), "matmul"));
  const tf = (2 * M * R * C) / t / 1e12;
  rows.push([`4-bit matmul m=${M} (bf16, WMMA)`, `${R}x${C}`, `${(t * 1e3).toFixed(2)} ms`, `${tf.toFixed(1)} TFLOP/s`, peakTflops ? `${((100 * tf) / peakTflops).toFixed(1)}% of ${peakTflops.toFixed(0)}` : "-"]);
}
{
  const N = small ? 128 : 4096;
  using a = ctx.alloc(N * N * 2, true);
  using b = ctx.alloc(N * N * 2, true);
  using c = ctx.alloc(N * N * 4, true);
  const t = time(small ? 1 : 5, () => chk(s.ql_gemm(ctx.ptr, c.ptr, DType.F32, a.ptr, DType.BF16, b.ptr, DType.BF16, BigInt(N), BigInt(N), BigInt(N), 0, 1, 1, 0), "gemm"));
  const tf = (2 * N * N * N) / t / 1e12;
  rows.push([`gemm bf16 x bf16 -> f32 (WMMA)`, `${N}^3`, `${(t * 1e3).toFixed(2)} ms`, `${tf.toFixed(1)} TFLOP/s`, peakTflops ? `${((100 * tf) / peakTflops).toFixed(1)}% of ${peakTflops.toFixed(0)}` : "-"]);
}
console.log(`device: ${JSON.stringify(ctx.describe())}`);
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i])).join("  "));

TS
sed -i "s#ROOT/#${ROOT}/#" "$BENCH_TS"

if [[ "$MODE" == "--emu" ]]; then
  make -C "$ROOT/native" BUILD="$BUILD" -j"$JOBS" cudaemu
  deno run --allow-all "$BENCH_TS" "$BUILD/libqlora_cudaemu.so" tiny 0
  exit 0
fi

command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found (no GPU here); try --emu" >&2; exit 2; }
CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')"
NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
CLOCK="$(nvidia-smi --query-gpu=clocks.max.sm --format=csv,noheader,nounits | head -1 | tr -d ' ')"
SMS="$(nvidia-smi --query-gpu=multiprocessor_count --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ' || true)"
echo "gpu_check: $NAME, sm_$CAP, max SM clock $CLOCK MHz"

if [[ "$MODE" != "--bench" ]]; then
  make -C "$ROOT/native" BUILD="$BUILD" -j"$JOBS" CUDA_ARCHS="-gencode arch=compute_${CAP},code=sm_${CAP}" cuda
  make -C "$ROOT/native" BUILD="$BUILD" -j"$JOBS" cpu || echo "gpu_check: CPU backend not built (only the CUDA one is tested)"
  echo "== ptxas (registers / spills of the kernels, sm_$CAP)"
  awk '/Compiling entry function/ { e = $0; sub(/.*function \047/, "", e); sub(/\047.*/, "", e) }
       /bytes stack frame/ { sp = $0; sub(/.*: */, "", sp) }
       /Used [0-9]+ registers/ && e != "" { r = $0; sub(/.*Used /, "", r); sub(/ registers.*/, "", r);
         print r " regs | " sp " | " e; e = "" }' "$BUILD/ptxas_report.txt" |
    c++filt | grep -E "gemv_4bit|wmma_gemm|attn_|adam|quantize_4bit|lora_" | cut -c1-200 | sort -u || true
  echo "== op suite on the CUDA backend"
  (cd "$ROOT" && QLORA_BUILD_DIR="$BUILD" QLORA_BACKEND=cuda deno test --allow-all tests/native/)
  (cd "$ROOT" && QLORA_BUILD_DIR="$BUILD" QLORA_BACKEND=cuda deno run --allow-all scripts/check_vectors.ts tests/fixtures/reference/nf4_vectors.json) || true
fi

# Dense bf16 tensor-core FLOP per clock per SM (fp32 accumulate; data-center parts).
case "$CAP" in
  80) PER_SM=2048 ;; 86 | 89) PER_SM=1024 ;; 90) PER_SM=4096 ;; *) PER_SM=0 ;;
esac
if [[ -z "$SMS" || "$SMS" == *"N/A"* || "$SMS" == *"Field"* ]]; then
  SMS="$(deno eval "import { Context } from '$ROOT/server/ffi/tensor.ts'; const c = new Context({ libraryPath: '$BUILD/libqlora_cuda.so' }); console.log(c.describe().sm_count); c.dispose();")"
fi
PEAK="$(awk -v s="$SMS" -v c="$CLOCK" -v f="$PER_SM" 'BEGIN { printf "%.1f", s * c * 1e6 * f / 1e12 }')"
echo "== benchmarks (tensor-core peak ${PEAK} TFLOP/s = $SMS SMs x $CLOCK MHz x $PER_SM FLOP/clk/SM)"
deno run --allow-all "$BENCH_TS" "$BUILD/libqlora_cuda.so" full "$PEAK"
