// base64.ts — standard base64 (RFC 4648) decoding and encoding without dependencies.
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const LOOKUP = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) LOOKUP[ALPHABET.charCodeAt(i)] = i;

export function decodeBase64(s: string): Uint8Array {
  const clean = s.replace(/[\r\n\s]/g, "");
  if (clean.length % 4 !== 0) throw new Error("base64 length is not a multiple of 4");
  const pad = clean.endsWith("==") ? 2 : clean.endsWith("=") ? 1 : 0;
  const out = new Uint8Array((clean.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < clean.length; i += 4) {
    let v = 0;
    for (let j = 0; j < 4; j++) {
      const ch = clean.charCodeAt(i + j);
      const d = ch === 61 /* = */ && i + j >= clean.length - pad ? 0 : ch < 128 ? LOOKUP[ch] : -1;
      if (d < 0) throw new Error(`invalid base64 character at ${i + j}`);
      v = (v << 6) | d;
    }
    if (o < out.length) out[o++] = (v >> 16) & 255;
    if (o < out.length) out[o++] = (v >> 8) & 255;
    if (o < out.length) out[o++] = v & 255;
  }
  return out;
}

export function encodeBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const v = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    s += ALPHABET[(v >> 18) & 63] + ALPHABET[(v >> 12) & 63];
    s += i + 1 < bytes.length ? ALPHABET[(v >> 6) & 63] : "=";
    s += i + 2 < bytes.length ? ALPHABET[v & 63] : "=";
  }
  return s;
}
