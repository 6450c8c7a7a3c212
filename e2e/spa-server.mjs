// A tiny static server for the test single-page app (spa/): index.html for / and /callback,
// app.js, oidc-client-ts's browser build from node_modules, and /config.js telling the page its
// issuer and client id. No bundler: the page loads the IIFE build, which defines `oidc`.
//
// The tests start it themselves. By hand, with `wecom-oidc dev --config e2e/dev.yaml` running:
//   node spa-server.mjs http://127.0.0.1:8080     → spa on :5173, spa2 on :5174

import { createServer } from 'node:http'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))

const files = {
  '/': ['spa/index.html', 'text/html; charset=utf-8'],
  '/callback': ['spa/index.html', 'text/html; charset=utf-8'],
  '/app.js': ['spa/app.js', 'text/javascript; charset=utf-8'],
  '/lib/oidc-client-ts.min.js': ['node_modules/oidc-client-ts/dist/browser/oidc-client-ts.min.js', 'text/javascript; charset=utf-8'],
}

/**
 * Serves one instance of the SPA as client `clientId` of `issuer` on host:port.
 * @returns {Promise<{ origin: string, close: () => Promise<void> }>}
 */
export async function startSPA ({ issuer, clientId, host = '127.0.0.1', port }) {
  const server = createServer(async (req, res) => {
    const { pathname } = new URL(req.url, 'http://spa.invalid')
    res.setHeader('Cache-Control', 'no-store')
    res.setHeader('X-Content-Type-Options', 'nosniff')
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end()
      return
    }
    if (pathname === '/config.js') {
      const origin = `http://${host}:${server.address().port}`
      const config = {
        authority: issuer,
        client_id: clientId,
        redirect_uri: `${origin}/callback`,
        post_logout_redirect_uri: `${origin}/`,
      }
      res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' })
      res.end(`window.SPA_CONFIG = ${JSON.stringify(config)};\n`)
      return
    }
    if (pathname === '/favicon.ico') {
      res.writeHead(204).end()
      return
    }
    const file = files[pathname]
    if (!file) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found\n')
      return
    }
    try {
      const body = await readFile(path.join(here, file[0]))
      res.writeHead(200, { 'Content-Type': file[1], 'Content-Length': body.length })
      res.end(req.method === 'HEAD' ? undefined : body)
    } catch (err) {
      res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${err.message}\n`)
    }
  })
  await new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`SPA ${clientId}: cannot listen on ${host}:${port}: ${err.message}`)))
    server.listen(port, host, resolve)
  })
  return {
    origin: `http://${host}:${server.address().port}`,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }),
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const issuer = process.argv[2] || 'http://127.0.0.1:8080'
  for (const [clientId, port] of [['spa', 5173], ['spa2', 5174]]) {
    const { origin } = await startSPA({ issuer, clientId, port })
    console.log(`${clientId}  ${origin}/  (issuer ${issuer})`)
  }
}
