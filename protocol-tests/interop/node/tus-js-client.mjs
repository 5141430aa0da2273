// tus-js-client 4.x under Node against a running tusk (TUSK_URL).
// Every scenario verifies the stored bytes with GET + sha256 against the source.
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import * as tus from 'tus-js-client'
import {
  MiB, assert, head, makeBytes, runScenarios, sleep, tuskUrl, verifyBytes,
} from '../lib/common.mjs'

const endpoint = tuskUrl()
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tusk-interop-js-'))
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }))

function writeFile(name, bytes) {
  const p = path.join(tmp, name)
  fs.writeFileSync(p, bytes)
  return p
}

// Records every request tus-js-client makes (method, url, selected headers).
function recorder() {
  const log = []
  return {
    log,
    onBeforeRequest(req) {
      log.push({
        method: req.getMethod(),
        url: req.getURL(),
        offset: req.getHeader('Upload-Offset'),
        length: req.getHeader('Upload-Length'),
        defer: req.getHeader('Upload-Defer-Length'),
        concat: req.getHeader('Upload-Concat'),
        contentType: req.getHeader('Content-Type'),
      })
    },
    onAfterResponse(req, res) {
      log.push({ response: true, method: req.getMethod(), status: res.getStatus(), offset: res.getHeader('Upload-Offset') })
    },
    count(method) { return log.filter((r) => !r.response && r.method === method).length },
    requests() { return log.filter((r) => !r.response) },
    // "HEAD 200 @0, PATCH 204 @716800, ..." — one entry per response
    trace() { return log.filter((r) => r.response).map((r) => `${r.method} ${r.status}${r.offset != null ? ' @' + r.offset : ''}`).join(', ') },
  }
}

// Starts the upload, resolves with it on success, rejects on error.
function run(upload) {
  return new Promise((resolve, reject) => {
    upload.options.onSuccess = () => resolve(upload)
    upload.options.onError = (err) => reject(err)
    upload.start()
  })
}

function newUpload(file, opts) {
  return new tus.Upload(file, { endpoint, retryDelays: [0, 200, 500, 1000], ...opts })
}

// Polls HEAD until Upload-Offset holds still for `quietMs` (an aborted PATCH may still be
// committing on the server), and returns the stable reading.
async function stableOffset(url, quietMs = 300, limitMs = 10000) {
  const end = Date.now() + limitMs
  let last = await head(url)
  while (Date.now() < end) {
    await sleep(quietMs)
    const now = await head(url)
    if (now.status === last.status && now.offset === last.offset) return now
    last = now
  }
  throw new Error(`offset of ${url} did not settle within ${limitMs} ms (last ${JSON.stringify(last)})`)
}

function summarizeReasons(list) {
  const counts = {}
  for (const r of list) counts[r] = (counts[r] || 0) + 1
  return Object.entries(counts).map(([k, n]) => `${k} x${n}`).join(', ') || 'nothing'
}

const scenarios = []
const add = (name, fn) => scenarios.push([name, fn])

add('plain upload (2 MiB Buffer, one PATCH)', async () => {
  const src = Buffer.from(makeBytes(2 * MiB + 17, 1))
  const rec = recorder()
  const up = await run(newUpload(src, { metadata: { filename: 'plain.bin', filetype: 'application/octet-stream' }, onBeforeRequest: rec.onBeforeRequest, onAfterResponse: rec.onAfterResponse }))
  assert(rec.count('POST') === 1 && rec.count('PATCH') === 1, `expected 1 POST + 1 PATCH, saw ${JSON.stringify(rec.requests().map((r) => r.method))}`)
  const h = await head(up.url)
  assert(h.headers['upload-metadata'] && h.headers['upload-metadata'].includes('filename'), `Upload-Metadata on HEAD: ${h.headers['upload-metadata']}`)
  await verifyBytes(up.url, src)
})

add('chunked (chunkSize 1 MiB, 5 MiB file from disk)', async () => {
  const src = Buffer.from(makeBytes(5 * MiB, 2))
  const file = writeFile('chunked.bin', src)
  const rec = recorder()
  const chunks = []
  const up = await run(newUpload(fs.createReadStream(file), {
    chunkSize: 1 * MiB,
    onBeforeRequest: rec.onBeforeRequest, onAfterResponse: rec.onAfterResponse,
    onChunkComplete: (size, accepted) => chunks.push(accepted),
  }))
  assert(rec.count('PATCH') === 5, `expected 5 PATCHes, saw ${rec.count('PATCH')}`)
  assert(JSON.stringify(chunks) === JSON.stringify([1, 2, 3, 4, 5].map((n) => n * MiB)), `chunk offsets ${chunks}`)
  await verifyBytes(up.url, src)
  return `${rec.count('PATCH')} PATCHes`
})

add('resume after abort via FileUrlStorage + findPreviousUploads', async () => {
  const src = Buffer.from(makeBytes(8 * MiB, 3))
  const file = writeFile('resume.bin', src)
  const urlStorage = new tus.FileUrlStorage(path.join(tmp, 'tus-url-storage.json'))
  // Loopback is too fast to abort a PATCH half-way (tus-js-client has sent all 8 MiB before
  // its first onProgress), so the upload goes through a proxy throttled to 8 MiB/s, and the
  // client aborts once the proxy has passed ~3 MiB to tusk.
  const target = new URL(endpoint)
  const proxy = await tcpProxy(Number(target.port), { bytesPerSec: 8 * MiB })
  try {
    const proxied = `http://127.0.0.1:${proxy.port}${target.pathname}`
    const first = new tus.Upload(fs.createReadStream(file), { endpoint: proxied, urlStorage, retryDelays: null })
    await new Promise((resolve, reject) => {
      proxy.setOptions({
        onForward: (total) => {
          if (total >= 3 * MiB && !first._interopAborted) {
            first._interopAborted = true
            // Drop the connection as well, so tusk sees the body break off at ~3 MiB
            // rather than receiving what the client had already buffered.
            proxy.dropAll()
            first.abort().then(resolve, reject)
          }
        },
      })
      first.options.onSuccess = () => reject(new Error('upload finished before it could be aborted'))
      first.options.onError = reject
      first.start()
    })
    proxy.setOptions({ bytesPerSec: Infinity, onForward: () => {} })
    const url = first.url
    assert(url, 'no upload URL after abort')
    const h = await stableOffset(url)
    assert(h.status === 200, `HEAD after abort: ${h.status}`)
    assert(h.offset > 0 && h.offset < src.length, `HEAD after abort: Upload-Offset ${h.offset} (want 0 < offset < ${src.length}; tusk should keep the bytes of a broken-off PATCH)`)

    // Second attempt: a new Upload for the same file finds the stored URL and resumes.
    const rec = recorder()
    const second = new tus.Upload(fs.createReadStream(file), { endpoint: proxied, urlStorage, retryDelays: [0, 200, 500], onBeforeRequest: rec.onBeforeRequest, onAfterResponse: rec.onAfterResponse })
    const previous = await second.findPreviousUploads()
    assert(previous.length >= 1, 'findPreviousUploads found nothing')
    assert(previous[0].uploadUrl === url, `stored URL ${previous[0].uploadUrl} != ${url}`)
    second.resumeFromPreviousUpload(previous[0])
    await run(second)
    assert(second.url === url, `resumed into a different upload: ${second.url}`)
    assert(rec.count('POST') === 0, 'resume created a new upload (POST)')
    assert(rec.requests()[0].method === 'HEAD', `resume did not start with HEAD: ${rec.requests().map((r) => r.method)}`)
    const firstPatch = rec.requests().find((r) => r.method === 'PATCH')
    assert(firstPatch && Number(firstPatch.offset) === h.offset, `first PATCH after resume at offset ${firstPatch && firstPatch.offset}, HEAD said ${h.offset}`)
    await verifyBytes(url, src)
    return `connection dropped after 3 MiB passed the proxy; tusk kept ${h.offset} bytes; resumed from there`
  } finally {
    proxy.close()
  }
})

add('uploadDataDuringCreation (creation-with-upload, 1 MiB in the POST)', async () => {
  const src = Buffer.from(makeBytes(1 * MiB + 3, 4))
  const rec = recorder()
  const up = await run(newUpload(src, { uploadDataDuringCreation: true, onBeforeRequest: rec.onBeforeRequest, onAfterResponse: rec.onAfterResponse }))
  const post = rec.requests().find((r) => r.method === 'POST')
  assert(post && post.contentType === 'application/offset+octet-stream', `POST Content-Type ${post && post.contentType}`)
  assert(rec.count('PATCH') === 0, `expected no PATCH, saw ${rec.count('PATCH')}`)
  await verifyBytes(up.url, src)
})

add('uploadDataDuringCreation + chunkSize 1 MiB (first chunk in POST, rest PATCH)', async () => {
  const src = Buffer.from(makeBytes(3 * MiB + 5, 5))
  const rec = recorder()
  const up = await run(newUpload(src, { uploadDataDuringCreation: true, chunkSize: 1 * MiB, onBeforeRequest: rec.onBeforeRequest, onAfterResponse: rec.onAfterResponse }))
  assert(rec.count('POST') === 1 && rec.count('PATCH') === 3, `methods ${rec.requests().map((r) => r.method)}`)
  const firstPatch = rec.requests().find((r) => r.method === 'PATCH')
  assert(Number(firstPatch.offset) === 1 * MiB, `first PATCH at ${firstPatch.offset}`)
  await verifyBytes(up.url, src)
})

for (const [label, size, piece] of [['3.5 MiB in 300 KiB pieces', 3.5 * MiB, 300 * 1024], ['3 MiB in 1 MiB pieces', 3 * MiB, 1 * MiB]]) {
  add(`uploadLengthDeferred (Readable of ${label}, chunkSize 1 MiB)`, async () => {
    const src = Buffer.from(makeBytes(size, 6))
    // A plain Readable of unknown size.
    const pieces = []
    for (let i = 0; i < src.length; i += piece) pieces.push(src.subarray(i, i + piece))
    const rec = recorder()
    const up = await run(newUpload(Readable.from(pieces), { uploadLengthDeferred: true, chunkSize: 1 * MiB, onBeforeRequest: rec.onBeforeRequest, onAfterResponse: rec.onAfterResponse }))
    const post = rec.requests().find((r) => r.method === 'POST')
    assert(post.defer === '1' && post.length == null, `POST headers: defer=${post.defer} length=${post.length}`)
    const withLength = rec.requests().filter((r) => r.method === 'PATCH' && r.length != null)
    assert(withLength.length === 1 && Number(withLength[0].length) === src.length, `PATCHes carrying Upload-Length: ${JSON.stringify(withLength)}`)
    await verifyBytes(up.url, src)
    return `${rec.count('PATCH')} PATCHes, Upload-Length sent at offset ${withLength[0].offset}`
  })
}

add('parallelUploads: 3 (concatenation, 6 MiB + 1)', async () => {
  const src = Buffer.from(makeBytes(6 * MiB + 1, 7))
  const rec = recorder()
  const up = await run(newUpload(src, { parallelUploads: 3, onBeforeRequest: rec.onBeforeRequest, onAfterResponse: rec.onAfterResponse }))
  const posts = rec.requests().filter((r) => r.method === 'POST')
  const partials = posts.filter((r) => r.concat === 'partial')
  const finals = posts.filter((r) => r.concat && r.concat.startsWith('final;'))
  assert(partials.length === 3 && finals.length === 1, `POSTs: ${JSON.stringify(posts.map((p) => p.concat))}`)
  const h = await head(up.url)
  assert(h.headers['upload-concat'] && h.headers['upload-concat'].startsWith('final;'), `HEAD Upload-Concat of final: ${h.headers['upload-concat']}`)
  await verifyBytes(up.url, src)
  return `final ${up.url.split('/').pop()} = 3 partials`
})

add('termination: abort(true) mid-upload -> HEAD 404', async () => {
  const src = Buffer.from(makeBytes(6 * MiB, 8))
  const up = newUpload(src, { chunkSize: 1 * MiB })
  await new Promise((resolve, reject) => {
    up.options.onChunkComplete = (size, accepted) => {
      if (accepted >= 2 * MiB && !up._interopAborted) {
        up._interopAborted = true
        up.abort(true).then(resolve, reject)
      }
    }
    up.options.onSuccess = () => reject(new Error('finished before abort'))
    up.options.onError = reject
    up.start()
  })
  const h = await head(up.url)
  assert(h.status === 404, `HEAD after abort(true): ${h.status} (want 404)`)
})

add('termination: Upload.terminate(url) of a finished upload -> HEAD 404, GET 404', async () => {
  const src = Buffer.from(makeBytes(512 * 1024, 9))
  const up = await run(newUpload(src, {}))
  await verifyBytes(up.url, src)
  await tus.Upload.terminate(up.url, { retryDelays: [0] })
  const h = await head(up.url)
  assert(h.status === 404, `HEAD after terminate: ${h.status}`)
  const g = await fetch(up.url)
  assert(g.status === 404, `GET after terminate: ${g.status}`)
})

// A TCP proxy in front of tusk. Options:
//   cutAfter: cut every connection after this many bytes client->server (Infinity: never)
//   bytesPerSec: throttle client->server (with backpressure on the client socket)
//   onForward(total): called with the running total of bytes forwarded client->server
function tcpProxy(targetPort, { cutAfter = Infinity, bytesPerSec = Infinity, onForward = () => {} } = {}) {
  const stats = { connections: 0, cuts: 0, bytesForwarded: 0 }
  const sockets = new Set()
  const server = net.createServer((client) => {
    stats.connections++
    let sent = 0
    const t0 = Date.now()
    const upstream = net.connect(targetPort, '127.0.0.1')
    sockets.add(client); sockets.add(upstream)
    client.on('close', () => sockets.delete(client))
    upstream.on('close', () => sockets.delete(upstream))
    const kill = () => { client.destroy(); upstream.destroy() }
    client.on('error', kill)
    upstream.on('error', kill)
    client.on('end', () => upstream.end())
    upstream.on('end', () => client.end())
    upstream.on('data', (d) => client.write(d))
    client.on('data', (d) => {
      const room = cutAfter - sent
      if (d.length >= room) {
        // Forward what fits, then drop both sides: the server sees the body break off,
        // the client sees its connection die.
        stats.cuts++
        stats.bytesForwarded += room
        sent = cutAfter
        client.pause()
        client.removeAllListeners('data')
        upstream.write(d.subarray(0, room), () => kill())
        return
      }
      sent += d.length
      stats.bytesForwarded += d.length
      upstream.write(d)
      onForward(stats.bytesForwarded)
      if (Number.isFinite(bytesPerSec)) {
        const due = t0 + (sent / bytesPerSec) * 1000
        const wait = due - Date.now()
        if (wait > 0) {
          client.pause()
          setTimeout(() => client.resume(), wait)
        }
      }
    })
  })
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      port: server.address().port,
      stats,
      dropAll() { for (const s of sockets) s.destroy() },
      setOptions(o) { if ('bytesPerSec' in o) bytesPerSec = o.bytesPerSec; if ('onForward' in o) onForward = o.onForward },
      close: () => { for (const s of sockets) s.destroy(); server.close() },
    }))
  })
}

for (const delays of [[0, 100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000], [200, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 1000]]) {
add(`connection-cutting proxy (cut each connection after 700 KiB; retryDelays [${delays.slice(0, 4)},...])`, async () => {
  const src = Buffer.from(makeBytes(4 * MiB + 123, 10))
  const target = new URL(endpoint)
  const proxy = await tcpProxy(Number(target.port), { cutAfter: 700 * 1024 })
  try {
    const proxied = `http://127.0.0.1:${proxy.port}${target.pathname}`
    const rec = recorder()
    const retryReasons = []
    const up = await run(new tus.Upload(src, {
      endpoint: proxied,
      retryDelays: delays,
      onBeforeRequest: rec.onBeforeRequest, onAfterResponse: rec.onAfterResponse,
      onShouldRetry: (err, attempt, options) => {
        const res = err.originalResponse
        const cause = err.causingError ? String(err.causingError.code || err.causingError.message) : null
        retryReasons.push(res ? `status ${res.getStatus()}` : cause || 'no response')
        return tus.defaultOptions.onShouldRetry(err, attempt, options)
      },
    }))
    assert(up.url.startsWith(`http://127.0.0.1:${proxy.port}/`), `Location does not go through the proxy: ${up.url}`)
    assert(proxy.stats.cuts >= 4, `expected several cuts, saw ${proxy.stats.cuts}`)
    const patches = rec.requests().filter((r) => r.method === 'PATCH').map((r) => Number(r.offset))
    for (let i = 1; i < patches.length; i++) {
      assert(patches[i] >= patches[i - 1], `PATCH offsets went backwards: ${patches}`)
    }
    await verifyBytes(up.url, src)
    const conflicts = rec.log.filter((r) => r.response && r.status === 409).length
    // A HEAD that repeats the previous HEAD's offset came before tusk had committed the cut
    // PATCH; the PATCH sent on it is wasted (409, or cut again).
    const heads = rec.log.filter((r) => r.response && r.method === 'HEAD').map((r) => r.offset)
    const stale = heads.filter((o, i) => i > 0 && o === heads[i - 1]).length + (heads[0] === '0' ? 1 : 0)
    return `${proxy.stats.connections} connections, ${proxy.stats.cuts} cuts, ${stale} stale HEADs, ${conflicts} x 409; retried on: ${summarizeReasons(retryReasons)}; responses: ${rec.trace()}`
  } finally {
    proxy.close()
  }
})
}

add('checksum option (tus-js-client has none; checksum covered by tuspy)', async () => {
  const keys = Object.keys(tus.defaultOptions)
  const readme = fs.readFileSync(new URL('../node_modules/tus-js-client/README.md', import.meta.url), 'utf8')
  const docs = fs.readdirSync(new URL('../node_modules/tus-js-client/', import.meta.url))
  const hit = keys.filter((k) => /checksum/i.test(k))
  assert(hit.length === 0 && !/checksum/i.test(readme), `tus-js-client now has checksum support (${hit}); add a scenario for it`)
  return `no checksum option among ${keys.length} options (files: ${docs.join(',')}); not testable with this client`
})

// ---- IETF draft "Resumable Uploads for HTTP": tus-js-client's protocol option.
// 'ietf-draft-03' sends Upload-Draft-Interop-Version 5, 'ietf-draft-05' sends 6; no Tus-Resumable.
function draftRecorder() {
  const rec = recorder()
  const before = rec.onBeforeRequest
  rec.onBeforeRequest = (req) => {
    before(req)
    const last = rec.log[rec.log.length - 1]
    last.interop = req.getHeader('Upload-Draft-Interop-Version')
    last.tus = req.getHeader('Tus-Resumable')
    last.complete = req.getHeader('Upload-Complete')
  }
  return rec
}

function assertDraftRequests(rec, interop) {
  for (const r of rec.requests()) {
    assert(r.interop === interop && r.tus == null, `${r.method} sent Upload-Draft-Interop-Version ${r.interop}, Tus-Resumable ${r.tus} (want ${interop}, none)`)
  }
}

for (const [protocol, interop] of [['ietf-draft-03', '5'], ['ietf-draft-05', '6']]) {
  add(`IETF draft (protocol '${protocol}', interop ${interop}): upload in 1 MiB appends`, async () => {
    const src = Buffer.from(makeBytes(3 * MiB + 5, 40 + Number(interop)))
    const rec = draftRecorder()
    const up = await run(newUpload(src, { protocol, chunkSize: 1 * MiB, onBeforeRequest: rec.onBeforeRequest, onAfterResponse: rec.onAfterResponse }))
    assertDraftRequests(rec, interop)
    assert(rec.count('POST') === 1 && rec.count('PATCH') === 4, `expected 1 POST + 4 PATCH, saw ${rec.trace()}`)
    const patches = rec.requests().filter((r) => r.method === 'PATCH')
    assert(patches.map((r) => r.complete).join() === '?0,?0,?0,?1', `Upload-Complete of the appends: ${patches.map((r) => r.complete)}`)
    if (protocol === 'ietf-draft-05') {
      assert(patches.every((r) => r.contentType === 'application/partial-upload'), 'ietf-draft-05 appends are application/partial-upload')
    }
    await verifyBytes(up.url, src)
    return rec.trace()
  })
}

add("IETF draft (protocol 'ietf-draft-05'): an interrupted upload resumes from the server's offset", async () => {
  const protocol = 'ietf-draft-05'
  const src = Buffer.from(makeBytes(8 * MiB, 47))
  const file = writeFile('draft-resume.bin', src)
  const urlStorage = new tus.FileUrlStorage(path.join(tmp, 'tus-url-storage-draft.json'))
  // As in the tus resume scenario: throttled proxy, connection dropped after ~3 MiB.
  const target = new URL(endpoint)
  const proxy = await tcpProxy(Number(target.port), { bytesPerSec: 8 * MiB })
  try {
    const proxied = `http://127.0.0.1:${proxy.port}${target.pathname}`
    const first = new tus.Upload(fs.createReadStream(file), { endpoint: proxied, protocol, urlStorage, retryDelays: null })
    await new Promise((resolve, reject) => {
      proxy.setOptions({
        onForward: (total) => {
          if (total >= 3 * MiB && !first._interopAborted) {
            first._interopAborted = true
            proxy.dropAll()
            first.abort().then(resolve, reject)
          }
        },
      })
      first.options.onSuccess = () => reject(new Error('upload finished before it could be aborted'))
      first.options.onError = reject
      first.start()
    })
    proxy.setOptions({ bytesPerSec: Infinity, onForward: () => {} })
    const url = first.url
    assert(url, 'no upload URL after abort')
    const h = await stableOffset(url)
    assert(h.offset > 0 && h.offset < src.length, `HEAD after abort: Upload-Offset ${h.offset} (want 0 < offset < ${src.length})`)

    const rec = draftRecorder()
    const second = new tus.Upload(fs.createReadStream(file), { endpoint: proxied, protocol, urlStorage, retryDelays: [0, 200, 500], onBeforeRequest: rec.onBeforeRequest, onAfterResponse: rec.onAfterResponse })
    const previous = await second.findPreviousUploads()
    assert(previous.length >= 1 && previous[0].uploadUrl === url, `stored URL: ${previous.map((p) => p.uploadUrl)} (want ${url})`)
    second.resumeFromPreviousUpload(previous[0])
    await run(second)
    assertDraftRequests(rec, '6')
    assert(second.url === url, `resumed into a different upload: ${second.url}`)
    assert(rec.count('POST') === 0, 'resume created a new upload (POST)')
    assert(rec.requests()[0].method === 'HEAD', `resume did not start with HEAD: ${rec.trace()}`)
    const firstPatch = rec.requests().find((r) => r.method === 'PATCH')
    assert(firstPatch && Number(firstPatch.offset) === h.offset, `first PATCH after resume at offset ${firstPatch && firstPatch.offset}, HEAD said ${h.offset}`)
    await verifyBytes(url, src)
    return `draft upload cut after 3 MiB; tusk kept ${h.offset} bytes; resumed in draft mode: ${rec.trace()}`
  } finally {
    proxy.close()
  }
})

const ok = await runScenarios('tus-js-client', scenarios, { timeoutMs: 60000 })
process.exit(ok ? 0 : 1)
