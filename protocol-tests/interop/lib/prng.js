// Deterministic test bytes, shared by Node and the browser page (bundled by esbuild).
// xorshift32 keyed by a seed; fills 4 bytes per step. Same (seed, size) -> same bytes everywhere.
export function makeBytes(size, seed) {
  const out = new Uint8Array(size)
  let x = (seed >>> 0) || 0x9e3779b9
  let i = 0
  for (; i + 4 <= size; i += 4) {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    out[i] = x & 0xff
    out[i + 1] = (x >>> 8) & 0xff
    out[i + 2] = (x >>> 16) & 0xff
    out[i + 3] = (x >>> 24) & 0xff
  }
  for (; i < size; i++) {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    out[i] = x & 0xff
  }
  return out
}
