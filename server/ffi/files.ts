// files.ts — reading a file's byte range into host memory off the JavaScript thread
// (ql_read_file is bound nonblocking): the model loader reads the next tensor while the current
// one is quantized or copied by a (blocking) native call.
import type { Context } from "./tensor.ts";

const ERRNO: Record<number, string> = {
  1: "EPERM (not permitted)",
  2: "ENOENT (no such file)",
  5: "EIO (input/output error)",
  12: "ENOMEM (out of memory)",
  13: "EACCES (permission denied)",
  21: "EISDIR (a directory)",
  22: "EINVAL (invalid argument)",
  75: "EOVERFLOW (offset too large)",
};

/** Reads dst.length bytes of `path` from `offset` into dst; fails on an error or a short file. */
export async function readFileInto(ctx: Context, path: string, offset: number, dst: Uint8Array): Promise<void> {
  const cPath = new TextEncoder().encode(`${path}\0`);
  const n = Number(await ctx.lib.symbols.ql_read_file(cPath, BigInt(offset), BigInt(dst.length), dst));
  if (n < 0) throw new Error(`cannot read ${path}: ${ERRNO[-n] ?? `errno ${-n}`}`);
  if (n < dst.length) throw new Error(`${path}: unexpected end of file at byte ${offset + n} (wanted ${dst.length} bytes from ${offset})`);
}
