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
  const n = await readFileRange(ctx, path, offset, dst, false);
  if (n < dst.length) throw new Error(`${path}: unexpected end of file at byte ${offset + n} (wanted ${dst.length} bytes from ${offset})`);
}

/** The alignment of direct reads (offset, length and buffer address). */
export const DIRECT_ALIGN = 4096;

/**
 * Reads up to dst.length bytes of `path` from `offset` into dst and returns how many were read
 * (fewer only at the end of the file). `direct` reads around the page cache where the offset,
 * the length and dst's address are multiples of DIRECT_ALIGN and the file system allows it:
 * the disk then writes into dst with no copy through the kernel, and reading a checkpoint once
 * does not fill the page cache with it.
 */
export async function readFileRange(ctx: Context, path: string, offset: number, dst: Uint8Array, direct: boolean): Promise<number> {
  const cPath = new TextEncoder().encode(`${path}\0`);
  const n = Number(await ctx.lib.symbols.ql_read_file(cPath, BigInt(offset), BigInt(dst.length), dst, direct ? 1 : 0));
  if (n < 0) throw new Error(`cannot read ${path}: ${ERRNO[-n] ?? `errno ${-n}`}`);
  return n;
}
