// Uppy (@uppy/core + @uppy/tus) in headless Chromium, driven by playwright-core.
// The page is served by a tiny static server on its own port, so every request to tusk is
// cross-origin and goes through CORS. Bytes are checked from Node by GET + sha256.
import * as fs from 'node:fs'
import * as http from 'node:http'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'
import { chromium } from 'playwright-core'
import { MiB, assert, head, makeBytes, runScenarios, sleep, tuskUrl, verifyBytes } from '../lib/common.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const endpoint = tuskUrl()
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium'
if (!fs.existsSync(CHROMIUM)) {
  console.log(`  FAIL  uppy: ${CHROMIUM} is missing (run.sh installs Debian's chromium package)`)
  console.log('0 passed, 1 failed')
  process.exit(1)
}

// Bundle the page in memory.
const built = await esbuild.build({
  entryPoints: [path.join(here, 'page.js')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'chrome120',
  write: false,
  logLevel: 'warning',
})
const pageJs = built.outputFiles[0].text
const indexHtml = '<!doctype html><meta charset="utf-8"><title>tusk interop: Uppy</title><script type="module" src="/page.js"></script><p>tusk interop</p>'

const staticServer = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x')
  if (u.pathname === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(indexHtml)
  } else if (u.pathname === '/page.js') {
    res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' }).end(pageJs)
  } else if (u.pathname === '/favicon.ico') {
    res.writeHead(204).end()
  } else {
    res.writeHead(404).end()
  }
})
await new Promise((r) => staticServer.listen(0, '127.0.0.1', r))
const pageOrigin = `http://127.0.0.1:${staticServer.address().port}`
const tuskOrigin = new URL(endpoint).origin
assert(pageOrigin !== tuskOrigin, 'page must be cross-origin to tusk')
console.log(`  page ${pageOrigin}/ (${(pageJs.length / 1024).toFixed(0)} KiB bundle), tusk ${endpoint}, ${CHROMIUM}`)

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tusk-interop-chromium-'))
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
})
const cleanup = async () => {
  await context.close().catch(() => {})
  staticServer.close()
  fs.rmSync(userDataDir, { recursive: true, force: true })
}

// Every response from tusk as the page saw it (after CORS): method, status, ACAO.
const seen = []
const consoleErrors = []
const page = context.pages()[0] || await context.newPage()
const pending = new Set()
page.on('response', (res) => {
  if (!res.url().startsWith(tuskOrigin)) return
  const entry = { method: res.request().method(), status: res.status(), url: res.url() }
  seen.push(entry)
  const p = res.allHeaders().then((h) => { entry.acao = h['access-control-allow-origin'] }, () => {})
  pending.add(p)
  p.finally(() => pending.delete(p))
})
// Playwright reports responses asynchronously: let the ones in flight land before reading.
async function settled() {
  await sleep(100)
  await Promise.all([...pending])
}
page.on('requestfailed', (req) => {
  if (req.url().startsWith(tuskOrigin)) seen.push({ method: req.method(), failed: req.failure() && req.failure().errorText, url: req.url() })
})
page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()) })
page.on('pageerror', (err) => consoleErrors.push(String(err)))

await page.goto(`${pageOrigin}/?endpoint=${encodeURIComponent(endpoint)}`)
await page.waitForFunction(() => window.interopReady === true, null, { timeout: 15000 })

function summarize(list) {
  const counts = {}
  for (const r of list) {
    const k = r.failed ? `${r.method} failed(${r.failed})` : `${r.method} ${r.status}`
    counts[k] = (counts[k] || 0) + 1
  }
  return Object.entries(counts).map(([k, n]) => `${k} x${n}`).join(', ')
}

function checkCors(list) {
  const bad = list.filter((r) => !r.failed && r.acao !== pageOrigin && r.acao !== '*')
  assert(bad.length === 0, `responses without Access-Control-Allow-Origin for ${pageOrigin}: ${JSON.stringify(bad)}`)
}

const scenarios = []

scenarios.push(['3 MiB generated File, cross-origin upload', async () => {
  const from = seen.length
  const size = 3 * MiB + 5
  const r = await page.evaluate((a) => window.interop.upload(a), { size, seed: 31, name: 'uppy-3mib.bin', tusOpts: { retryDelays: [0, 1000, 3000] } })
  assert(r.successful === 1 && r.failed.length === 0, `uppy result: ${JSON.stringify(r)}; console errors: ${consoleErrors.join(' | ')}`)
  assert(r.uploadURL && r.uploadURL.startsWith(endpoint), `upload URL ${r.uploadURL}`)
  await settled()
  const mine = seen.slice(from)
  checkCors(mine)
  assert(mine.some((x) => x.method === 'POST' && x.status === 201) && mine.some((x) => x.method === 'PATCH' && x.status === 204), `tusk responses: ${summarize(mine)}`)
  const h = await head(r.uploadURL)
  assert(/filename/.test(h.headers['upload-metadata'] || ''), `Upload-Metadata from Uppy: ${h.headers['upload-metadata']}`)
  await verifyBytes(r.uploadURL, Buffer.from(makeBytes(size, 31)))
  return `${summarize(mine)}; ACAO ok`
}])

scenarios.push(['pause/resume: 20 MiB, chunkSize 1 MiB, paused after >= 5.5 MiB of progress', async () => {
  const from = seen.length
  const size = 20 * MiB
  const seed = 32
  await page.evaluate((a) => window.interop.startPausable(a), {
    size, seed, name: 'uppy-20mib.bin', pauseAt: 5.5 * MiB,
    tusOpts: { chunkSize: 1 * MiB, retryDelays: [0, 1000, 3000] },
  })
  await page.waitForFunction(() => window.interop.state.paused || window.interop.state.done, null, { timeout: 30000, polling: 20 })
  let state = await page.evaluate(() => window.interop.state)
  assert(!state.done, `upload finished before it could be paused: ${JSON.stringify(state)}`)
  const url = await page.evaluate(() => window.interop.uploadURLOf())
  assert(url, 'no upload URL while paused')
  // The PATCH in flight when Uppy paused is aborted; let tusk commit it, then the offset
  // must stay put for a second.
  let h0 = await head(url)
  for (let i = 0; i < 20; i++) {
    await sleep(150)
    const h = await head(url)
    if (h.offset === h0.offset) break
    h0 = h
  }
  assert(h0.status === 200 && h0.offset > 0 && h0.offset < size, `HEAD while paused: ${h0.status} offset ${h0.offset}`)
  const readings = []
  for (let i = 0; i < 5; i++) {
    await sleep(250)
    readings.push((await head(url)).offset)
  }
  assert(readings.every((o) => o === h0.offset), `offset moved while paused: ${h0.offset} then ${readings}`)
  const progressWhilePaused = (await page.evaluate(() => window.interop.state)).bytesUploaded
  const resumedPaused = await page.evaluate(() => window.interop.resume())
  assert(resumedPaused === false, 'pauseResume did not resume')
  await page.waitForFunction(() => window.interop.state.done, null, { timeout: 60000, polling: 50 })
  state = await page.evaluate(() => window.interop.state)
  assert(!state.error, `upload failed after resume: ${state.error}; console: ${consoleErrors.join(' | ')}`)
  assert(state.uploadURL === url, `finished into ${state.uploadURL}, paused upload was ${url}`)
  await settled()
  const mine = seen.slice(from)
  checkCors(mine)
  // After resume, Uppy (tus-js-client) asks HEAD for the offset and PATCHes from there.
  const heads = mine.filter((x) => x.method === 'HEAD' && x.status === 200)
  assert(heads.length >= 1, `no HEAD after resume: ${summarize(mine)}`)
  await verifyBytes(url, Buffer.from(makeBytes(size, seed)))
  return `paused at ${state.pausedAt} B reported (Uppy progress ${progressWhilePaused}); tusk held ${h0.offset} for 1.25 s; ${summarize(mine)}`
}])

let ok = false
try {
  ok = await runScenarios('uppy', scenarios, { timeoutMs: 90000 })
} finally {
  if (consoleErrors.length) console.log(`  browser console errors: ${consoleErrors.join(' | ')}`)
  await cleanup()
}
process.exit(ok ? 0 : 1)
