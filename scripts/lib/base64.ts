// base64.ts — standard base64 (RFC 4648) decoding without dependencies (the test vectors' tensors).
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
