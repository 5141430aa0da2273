// The demo page tusk serves itself at /demo/ (`[demo] enabled = true`; run.sh starts tusk
// with TUSK_DEMO__ENABLED=true), driven in headless Chromium with playwright-core the way a
// person uses it: add a file to the Uppy Dashboard, press Upload, wait for the result line.
// The page and tusk share an origin, so the page's default endpoint (location.origin +
// "/files/") is used as is. Bytes are checked from Node by GET + sha256.
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { chromium } from 'playwright-core'
import { MiB, assert, head, makeBytes, runScenarios, sha256, sleep, tuskUrl, verifyBytes } from './lib/common.mjs'

const endpoint = tuskUrl()
const origin = new URL(endpoint).origin
const demoUrl = `${origin}/demo/`
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium'
if (!fs.existsSync(CHROMIUM)) {
  console.log(`  FAIL  demo: ${CHROMIUM} is missing (run.sh installs Debian's chromium package)`)
  console.log('0 passed, 1 failed')
  process.exit(1)
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tusk-interop-demo-'))
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
  fs.rmSync(userDataDir, { recursive: true, force: true })
}

const page = context.pages()[0] || await context.newPage()
const consoleErrors = []
page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()) })
page.on('pageerror', (err) => consoleErrors.push(String(err)))
// tus requests the page made: method and status, in order.
const tusResponses = []
page.on('response', (res) => {
  if (new URL(res.url()).pathname.startsWith('/files/')) {
    tusResponses.push({ method: res.request().method(), status: res.status(), url: res.url() })
  }
})
const summarize = (list) => {
  const counts = {}
  for (const r of list) counts[`${r.method} ${r.status}`] = (counts[`${r.method} ${r.status}`] || 0) + 1
  return Object.entries(counts).map(([k, n]) => `${k} x${n}`).join(', ')
}

// The Dashboard's hidden <input type=file> for files (the other one picks folders).
const FILE_INPUT = 'input.uppy-Dashboard-input[type=file]:not([webkitdirectory])'
const UPLOAD_BUTTON = 'button.uppy-StatusBar-actionBtn--upload'

// Add a generated file through the file input, press Upload, wait for the page's result line
// for it; returns the upload URL the page links to.
async function uploadThroughDashboard(name, size, seed) {
  const buffer = Buffer.from(makeBytes(size, seed))
  const before = await page.locator('#results li').count()
  // With files listed (after an upload) the Dashboard hides its add-files panel: "Add more".
  if (await page.locator(FILE_INPUT).count() === 0) {
    await page.locator('button.uppy-DashboardContent-addMore').click({ timeout: 10000 })
  }
  await page.locator(FILE_INPUT).first().setInputFiles({ name, mimeType: 'application/octet-stream', buffer })
  await page.waitForFunction((n) => window.uppy.getFiles().some((f) => f.name === n), name, { timeout: 10000 })
  await page.locator(UPLOAD_BUTTON).click({ timeout: 10000 })
  await page.locator('#results li').nth(before).waitFor({ timeout: 60000 })
  const item = page.locator('#results li').nth(before)
  const cls = (await item.getAttribute('class')) || ''
  const text = await item.innerText()
  assert(!cls.includes('error'), `the page reported an error: ${text}; console: ${consoleErrors.join(' | ')}`)
  const link = item.locator('a')
  assert((await link.innerText()) === name, `result line names ${await link.innerText()}, expected ${name}`)
  const url = await link.getAttribute('href')
  assert(url && url.startsWith(endpoint), `result links to ${url}, expected an upload under ${endpoint}`)
  assert(text.includes(`${size} bytes`), `result line: ${text}`)
  const state = await page.evaluate((n) => {
    const f = window.uppy.getFiles().find((x) => x.name === n)
    return f && { complete: f.progress.uploadComplete, uploaded: f.progress.bytesUploaded, url: f.response && f.response.uploadURL }
  }, name)
  assert(state && state.complete && state.url === url, `Uppy state for ${name}: ${JSON.stringify(state)}`)
  await verifyBytes(url, buffer)
  await sleep(150) // let Playwright deliver the last response events
  return { url, sha: sha256(buffer) }
}

const scenarios = []

scenarios.push(['/demo redirects to /demo/, which loads the Dashboard', async () => {
  const redirect = await fetch(`${origin}/demo`, { redirect: 'manual' })
  assert(redirect.status === 308 && redirect.headers.get('location') === '/demo/', `GET /demo -> ${redirect.status} ${redirect.headers.get('location')}`)
  const js = await fetch(`${origin}/demo/demo.js`)
  assert(js.status === 200 && /javascript/.test(js.headers.get('content-type') || ''), `demo.js -> ${js.status} ${js.headers.get('content-type')}`)
  const res = await page.goto(`${origin}/demo`)
  assert(res && res.status() === 200, `page load status ${res && res.status()}`)
  assert(page.url() === demoUrl, `browser ended at ${page.url()}`)
  await page.waitForFunction(() => window.uppy && document.querySelector('.uppy-Dashboard'), null, { timeout: 15000 })
  const value = await page.locator('#endpoint').inputValue()
  assert(value === endpoint, `the page's endpoint field says ${value}, expected ${endpoint}`)
  assert(await page.locator(FILE_INPUT).count() >= 1, 'no file input in the Dashboard')
  return `endpoint field ${value}`
}])

scenarios.push(['a 3 MiB file: add, Upload, result line, bytes by sha256', async () => {
  const from = tusResponses.length
  const size = 3 * MiB + 7
  const { url, sha } = await uploadThroughDashboard('demo-3mib.bin', size, 41)
  const mine = tusResponses.slice(from)
  assert(mine.some((r) => r.method === 'POST' && r.status === 201), `tus responses: ${summarize(mine)}`)
  const h = await head(url)
  assert(/filename/.test(h.headers['upload-metadata'] || ''), `Upload-Metadata: ${h.headers['upload-metadata']}`)
  return `${summarize(mine)}; sha256 ${sha.slice(0, 16)}…`
}])

scenarios.push(['a 16 MiB + 3 B file goes in 8 MiB chunks (three PATCHes)', async () => {
  const from = tusResponses.length
  const size = 16 * MiB + 3
  const { sha } = await uploadThroughDashboard('demo-16mib.bin', size, 42)
  const mine = tusResponses.slice(from)
  const patches = mine.filter((r) => r.method === 'PATCH' && r.status === 204).length
  assert(patches === 3, `expected 3 PATCH 204 (8 MiB chunks), saw ${summarize(mine)}`)
  return `${summarize(mine)}; sha256 ${sha.slice(0, 16)}…`
}])

let ok = false
try {
  ok = await runScenarios('demo', scenarios, { timeoutMs: 90000 })
} finally {
  if (consoleErrors.length) console.log(`  browser console errors: ${consoleErrors.join(' | ')}`)
  await cleanup()
}
process.exit(ok ? 0 : 1)
