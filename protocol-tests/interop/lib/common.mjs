// Helpers shared by the Node parts of the interop suite: talking to tusk directly
// (HEAD/GET/DELETE with fetch), hashing, test data, and a tiny scenario runner.
import { createHash } from 'node:crypto'
import { makeBytes } from './prng.js'

export { makeBytes }

export const MiB = 1024 * 1024

export function tuskUrl() {
  const url = process.env.TUSK_URL
  if (!url) {
    console.error('TUSK_URL is not set (run.sh starts tusk and sets it)')
    process.exit(2)
  }
  return url
}

export function sha256(buf) {
  return createHash('sha256').update(buf).digest('hex')
}

export async function head(uploadUrl) {
  const res = await fetch(uploadUrl, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } })
  return {
    status: res.status,
    offset: res.headers.get('upload-offset') == null ? null : Number(res.headers.get('upload-offset')),
    length: res.headers.get('upload-length') == null ? null : Number(res.headers.get('upload-length')),
    headers: Object.fromEntries(res.headers),
  }
}

export async function getBytes(uploadUrl) {
  const res = await fetch(uploadUrl)
  if (res.status !== 200) {
    throw new Error(`GET ${uploadUrl} -> ${res.status} ${await res.text()}`)
  }
  return Buffer.from(await res.arrayBuffer())
}

// GET the upload and compare length + sha256 with the source bytes.
export async function verifyBytes(uploadUrl, source) {
  const h = await head(uploadUrl)
  if (h.status !== 200) throw new Error(`HEAD ${uploadUrl} -> ${h.status}`)
  if (h.offset !== source.length || h.length !== source.length) {
    throw new Error(`HEAD says offset=${h.offset} length=${h.length}, expected ${source.length}`)
  }
  const got = await getBytes(uploadUrl)
  const want = sha256(source)
  const have = sha256(got)
  if (got.length !== source.length || have !== want) {
    throw new Error(`bytes differ: GET gave ${got.length} bytes sha256 ${have}, source ${source.length} bytes sha256 ${want}`)
  }
  return have
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms))
}

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`)
}

// Run named async scenarios in order, each with its own time limit; print one line per
// scenario and the closing `N passed, N failed` line. Exit code 1 if any failed.
export async function runScenarios(title, scenarios, { timeoutMs = 120000 } = {}) {
  let passed = 0
  let failed = 0
  for (const [name, fn] of scenarios) {
    const t0 = Date.now()
    let timer
    try {
      const note = await Promise.race([
        fn(),
        new Promise((_, rej) => {
          timer = setTimeout(() => rej(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs)
        }),
      ])
      passed++
      console.log(`  PASS  ${title}: ${name} (${Date.now() - t0} ms)${note ? ` — ${note}` : ''}`)
    } catch (err) {
      failed++
      console.log(`  FAIL  ${title}: ${name} (${Date.now() - t0} ms)\n        ${String(err && err.stack ? err.stack : err).split('\n').join('\n        ')}`)
    } finally {
      clearTimeout(timer)
    }
  }
  console.log(`${passed} passed, ${failed} failed`)
  return failed === 0
}
