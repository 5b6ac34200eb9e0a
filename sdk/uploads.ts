// uploads.ts — turning what callers have (a File or Blob, bytes, text) into multipart parts.
import type { Uploadable } from "./types.ts";

/** A File (or, where File is missing, a named Blob) from bytes, text or a Blob. */
export function toFile(
  content: Uploadable,
  name: string,
  options: { type?: string } = {},
): Blob {
  const blob = content instanceof Blob ? content : new Blob([
    typeof content === "string" ? content : ArrayBuffer.isView(content) ? copyBytes(content) : new Uint8Array(content),
  ], {
    type: options.type ?? "application/octet-stream",
  });
  if (typeof File !== "undefined") {
    return new File([blob], name, { type: options.type ?? blob.type });
  }
  return Object.assign(blob, { name });
}

function copyBytes(v: ArrayBufferView): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(v.byteLength);
  out.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  return out;
}

/** The name a Blob carries (File.name), if any. */
export function nameOf(v: unknown): string | undefined {
  const n = (v as { name?: unknown } | null)?.name;
  return typeof n === "string" && n.length > 0 ? n : undefined;
}

/** Appends a file part, keeping a File's own name unless one is given. */
export function appendFile(
  form: FormData,
  field: string,
  content: Uploadable,
  filename?: string,
  type?: string,
): void {
  const name = filename ?? nameOf(content) ?? field;
  form.append(field, toFile(content, name, { type }), name);
}
