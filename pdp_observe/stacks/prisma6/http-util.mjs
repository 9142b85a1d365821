// Small node:http helpers shared by the 6.19 servers. Responses are written like the recorded
// qe619/dp619 servers: `res.write(body); res.end()` (so Transfer-Encoding: chunked) and
// Keep-Alive timeout=60.
import http from 'node:http'
import { appendFileSync } from 'node:fs'

// REQUEST_LOG=<file>: one JSON line per request, written on arrival — the tests' independent
// count of what reached the server (to prove the sidecar recorded each request exactly once).
export function logRequest(method, path) {
  if (process.env.REQUEST_LOG) appendFileSync(process.env.REQUEST_LOG, JSON.stringify({ method, path }) + '\n')
}

export function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

/** Writes `body` (string) with `status`; `headers` are set first, in order. */
export function send(res, status, body, headers = [['content-type', 'application/json']]) {
  res.statusCode = status
  for (const [k, v] of headers) res.setHeader(k, v)
  if (body !== undefined && body !== '') res.write(body)
  res.end()
}

export function sendJson(res, status, value, extraHeaders = []) {
  send(res, status, typeof value === 'string' ? value : JSON.stringify(value), [
    ...extraHeaders,
    ['content-type', 'application/json'],
  ])
}

/**
 * Starts an HTTP server on 127.0.0.1:`port` (0 = any) and prints the ready line
 * `{"ready":true,"port":N,...info}` on stdout. Stops cleanly on SIGTERM/SIGINT.
 */
export function listen(handler, { port, info, onClose = async () => {}, printReady = true }) {
  const server = http.createServer((req, res) => {
    logRequest(req.method, req.url)
    Promise.resolve(handler(req, res)).catch((err) => {
      console.error(err)
      if (!res.headersSent) sendJson(res, 500, { is_panic: false, message: String(err?.message ?? err), backtrace: null })
      else res.end()
    })
  })
  server.keepAliveTimeout = 60_000
  return new Promise((resolve) => {
    server.listen(port, '127.0.0.1', () => {
      const actual = server.address().port
      if (printReady) console.log(JSON.stringify({ ready: true, port: actual, ...info }))
      const stop = async () => {
        server.close()
        server.closeAllConnections?.()
        const timeout = new Promise((resolve) => setTimeout(resolve, 2000).unref())
        await Promise.race([onClose().catch(() => {}), timeout])
        process.exit(0)
      }
      process.on('SIGTERM', stop)
      process.on('SIGINT', stop)
      resolve({ server, port: actual })
    })
  })
}
