// errors.ts — every native status becomes one typed error carrying the C function's name and
// the library's message.

export const Status = {
  OK: 0,
  INVALID: 1,
  OOM: 2,
  UNSUPPORTED: 3,
  BACKEND: 4,
  IO: 5,
  INTERNAL: 6,
} as const;

const STATUS_NAMES: Record<number, string> = {
  1: "invalid_argument",
  2: "out_of_memory",
  3: "unsupported",
  4: "backend_error",
  5: "io_error",
  6: "internal_error",
};

/** A native call returned a non-zero ql_status. */
export class NativeError extends Error {
  override name = "NativeError";
  constructor(
    readonly fn: string,
    readonly status: number,
    readonly nativeMessage: string,
  ) {
    super(`${fn}: ${STATUS_NAMES[status] ?? `status ${status}`}: ${nativeMessage || "(no message)"}`);
  }
  /** Symbolic name of the status ("invalid_argument", ...). */
  get code(): string {
    return STATUS_NAMES[this.status] ?? `status_${this.status}`;
  }
}

/** The native library could not be found, loaded, or has another ABI. */
export class NativeLibraryError extends Error {
  override name = "NativeLibraryError";
}
