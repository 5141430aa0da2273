// Source of the tusk browser demo: Uppy's Dashboard with the Tus plugin.
// ./build.sh bundles this file (and the CSS it imports) into ../demo.js and ../demo.css.
import Uppy from '@uppy/core'
import Dashboard from '@uppy/dashboard'
import Tus from '@uppy/tus'
import '@uppy/core/css/style.min.css'
import '@uppy/dashboard/css/style.min.css'

// tusk serves this page at /demo/, so its own origin is the server; `?endpoint=` overrides that
// (handy when the page is served from elsewhere), and so does the text field.
const field = document.getElementById('endpoint')
field.value = new URLSearchParams(location.search).get('endpoint') || location.origin + '/files/'

const uppy = new Uppy({ autoProceed: false, debug: false })
  .use(Dashboard, {
    inline: true,
    target: '#dashboard',
    width: '100%',
    height: 420,
    proudlyDisplayPoweredByUppy: false,
    showLinkToFileUploadResult: true,
    note: 'Any file, any size: uploads resume after a network drop or a page reload.',
  })
  .use(Tus, {
    endpoint: field.value,
    // 8 MiB chunks keep progress, pause and memory reasonable in a browser; a non-zero first
    // retry delay lets tusk commit a broken PATCH before the client asks where it stands.
    chunkSize: 8 * 1024 * 1024,
    retryDelays: [100, 1000, 3000, 5000, 10000],
    removeFingerprintOnSuccess: true,
  })

field.addEventListener('change', () => {
  uppy.getPlugin('Tus').setOptions({ endpoint: field.value.trim() })
})

// A list of finished uploads, each a link to the file on tusk.
const results = document.getElementById('results')
uppy.on('upload-success', (file, response) => {
  const item = document.createElement('li')
  const link = document.createElement('a')
  link.href = response.uploadURL
  link.textContent = file.name
  link.target = '_blank'
  link.rel = 'noopener'
  item.append(link, ` — ${file.size} bytes — ${response.uploadURL}`)
  results.append(item)
})
uppy.on('upload-error', (file, error) => {
  const item = document.createElement('li')
  item.className = 'error'
  item.textContent = `${file ? file.name : 'upload'}: ${error.message}`
  results.append(item)
})

// For scripted checks (and curious people with a console open).
window.uppy = uppy
