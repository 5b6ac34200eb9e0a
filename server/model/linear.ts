// linear.ts — a frozen linear layer y = x·Wᵀ (+ bias): 4-bit (QWeight) or dense 16/32-bit.
import { type Context, type DeviceBuffer, DType, type QWeight } from "../ffi/tensor.ts";
import { type Dev, gemm, matmul4bit, matmul4bitBackward } from "../ffi/ops.ts";

export type LinearWeight =
  | { kind: "q4"; q: QWeight }
  | { kind: "dense"; buf: DeviceBuffer; dtype: DType };

export class Linear {
  constructor(
    readonly rows: number, // out features
    readonly cols: number, // in features
    readonly weight: LinearWeight,
    readonly bias: DeviceBuffer | null = null, // f32 [rows]
  ) {}

  /** y [m, rows] (=|+=) x [m, cols] · Wᵀ + bias; x and y of dtype (f32 unless given).
   * ones: f32 [≥ m] of 1.0. */
  forward(ctx: Context, y: Dev, x: Dev, m: number, accumulate: boolean, ones: DeviceBuffer, dtype: DType = DType.F32): void {
    if (this.weight.kind === "q4") {
      matmul4bit(ctx, y, x, this.weight.q, m, dtype, accumulate);
    } else {
      gemm(ctx, {
        c: y,
        cType: dtype,
        a: x,
        aType: dtype,
        b: this.weight.buf,
        bType: this.weight.dtype,
        m,
        n: this.rows,
        k: this.cols,
        transB: true,
        beta: accumulate ? 1 : 0,
      });
    }
    // bias as a rank-1 update: y += ones[m, 1] · bias[1, rows]
    if (this.bias) {
      gemm(ctx, { c: y, cType: dtype, a: ones, aType: DType.F32, b: this.bias, bType: DType.F32, m, n: this.rows, k: 1, beta: 1 });
    }
  }

  /** dx [m, cols] (=|+=) dy [m, rows] · W (the weight is frozen). */
  backward(ctx: Context, dx: Dev, dy: Dev, m: number, accumulate: boolean, dtype: DType = DType.F32): void {
    if (this.weight.kind === "q4") {
      matmul4bitBackward(ctx, dx, dy, this.weight.q, m, dtype, accumulate);
    } else {
      gemm(ctx, {
        c: dx,
        cType: dtype,
        a: dy,
        aType: dtype,
        b: this.weight.buf,
        bType: this.weight.dtype,
        m,
        n: this.cols,
        k: this.rows,
        beta: accumulate ? 1 : 0,
      });
    }
  }

  /** Bytes held: [quantized codes, quantization constants, unquantized]. */
  bytes(): { packed: number; constants: number; dense: number } {
    const biasBytes = this.bias ? this.bias.bytes : 0;
    if (this.weight.kind === "q4") {
      return { packed: this.weight.q.info.packedBytes, constants: this.weight.q.info.constantBytes, dense: biasBytes };
    }
    return { packed: 0, constants: 0, dense: this.weight.buf.bytes + biasBytes };
  }

  dispose(): void {
    if (this.weight.kind === "q4") this.weight.q.dispose();
    else this.weight.buf.dispose();
    this.bias?.dispose();
  }
}
