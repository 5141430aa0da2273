// The page under test: Uppy (core + tus) in Chromium, uploading cross-origin to tusk.
// Bundled by esbuild at test time and served from a port other than tusk's.
// The driver (uppy.mjs) calls window.interop.* through playwright and reads window state.
import Uppy from '@uppy/core'
import Tus from '@uppy/tus'
import { makeBytes } from '../lib/prng.js'

const endpoint = new URLSearchParams(location.search).get('endpoint')

function newUppy(tusOpts) {
  const uppy = new Uppy({ autoProceed: false, debug: false })
  uppy.use(Tus, { endpoint, ...tusOpts })
  return uppy
}

window.interop = {
  // Adds a generated file and uploads it; resolves with the tus URL.
  async upload({ size, seed, name, tusOpts }) {
    const uppy = newUppy(tusOpts)
    const file = new File([makeBytes(size, seed)], name, { type: 'application/octet-stream' })
    let uploadURL = null
    uppy.on('upload-success', (f, response) => { uploadURL = response.uploadURL })
    uppy.addFile({ name, type: file.type, data: file, source: 'interop' })
    const result = await uppy.upload()
    const failed = (result.failed || []).map((f) => String(f.error))
    return { successful: result.successful.length, failed, uploadURL }
  },

  // Starts an upload and pauses it once `pauseAt` bytes have been reported; progress and
  // state are in window.interop.state; resume() and done are driven from the test.
  startPausable({ size, seed, name, tusOpts, pauseAt }) {
    const uppy = newUppy(tusOpts)
    const state = { bytesUploaded: 0, paused: false, pausedAt: null, uploadURL: null, done: false, error: null, progressAfterPause: 0 }
    window.interop.state = state
    const file = new File([makeBytes(size, seed)], name, { type: 'application/octet-stream' })
    const fileID = uppy.addFile({ name, type: file.type, data: file, source: 'interop' })
    uppy.on('upload-progress', (f, progress) => {
      state.bytesUploaded = progress.bytesUploaded
      if (state.paused) state.progressAfterPause++
      if (!state.paused && state.pausedAt == null && progress.bytesUploaded >= pauseAt) {
        state.paused = uppy.pauseResume(fileID)
        state.pausedAt = progress.bytesUploaded
      }
    })
    uppy.on('upload-success', (f, response) => { state.uploadURL = response.uploadURL })
    uppy.on('tus:upload-created', (f, { upload }) => { state.createdURL = upload.url })
    window.interop.resume = () => {
      state.paused = uppy.pauseResume(fileID)
      return state.paused
    }
    window.interop.uploadURLOf = () => {
      const f = uppy.getFile(fileID)
      return (f && f.tus && f.tus.uploadUrl) || null
    }
    uppy.upload().then((result) => {
      state.done = true
      if (result.failed && result.failed.length) state.error = result.failed.map((f) => String(f.error)).join('; ')
    }, (err) => { state.done = true; state.error = String(err) })
    return fileID
  },
}
window.interopReady = true
