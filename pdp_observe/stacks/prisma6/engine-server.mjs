// The real Prisma 6.19.0 engine (Wasm build + @prisma/adapter-pg) behind an HTTP server that
// speaks the `query-engine` binary's API (docs/protocols.md §A):
//   POST /                         query or batch (JSON protocol), header X-transaction-id for itx
//   POST /transaction/start        {"max_wait","timeout","isolation_level"?} -> {"id"}
//   POST /transaction/:id/commit|rollback
//   GET  /status  /server_info  /boot_trace ({"spans":[]})
//   GET  /_harness/pool            pool gauges (harness extra, not part of the engine API)
//   GET|POST /metrics…             with --enable-metrics: metrics (metrics.mjs; Prometheus text,
//                                  or JSON when the query string contains format=json)
//
//   node engine-server.mjs [--port N] [--database-url URL] [--datamodel-path FILE]
//                          [--enable-telemetry-in-response] [--enable-metrics]
//   env: PORT, DATABASE_URL, POOL_MAX (default 4), POOL_TIMEOUT_MS (default 10000),
//        ENGINE_TELEMETRY_IN_RESPONSE=1 (= the flag), ENGINE_METRICS=1 (= the flag)
//
// --enable-telemetry-in-response: Gen-2 telemetry (telemetry.mjs). Every response of POST /,
// /transaction/start, /transaction/:id/commit|rollback that the engine produced ends with
// "extensions":{"traces":[…],"logs":[…]} per the X-capture-telemetry header (empty arrays
// without / with an invalid header). Off: no tracing in the engine, responses unchanged.
//
// Ready line on stdout: {"ready":true,"port":N,"kind":"engine",...}.
// Invoked through ./query-engine (the launcher a binary-engine client spawns), it instead reads
// PRISMA_DML_PATH / OVERWRITE_DATASOURCES like the Rust binary and prints the binary's
// "Started query engine http server" log line, which is how BinaryEngine learns the port.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from '../common/args.mjs'
import { createEngine, createPool, engineBuildInfo, poolStats, transactionStatus } from './engine.mjs'
import { listen, readBody, send, sendJson } from './http-util.mjs'
import { createMetrics, sendMetrics } from './metrics.mjs'
import { captureHeader, withExtensions } from './telemetry.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const args = parseArgs(process.argv.slice(2))
const cliMode = Boolean(args['query-engine-cli'])

function resolveDatamodel() {
  const file = args['datamodel-path'] ?? process.env.PRISMA_DML_PATH
  if (file) return fs.readFileSync(file, 'utf8')
  if (process.env.PRISMA_DML) {
    const raw = process.env.PRISMA_DML
    const decoded = Buffer.from(raw, 'base64').toString('utf8')
    return decoded.includes('datasource') ? decoded : raw
  }
  return fs.readFileSync(path.join(HERE, 'binary', 'schema.prisma'), 'utf8')
}

function resolveDatabaseUrl() {
  if (args['database-url']) return args['database-url']
  if (process.env.OVERWRITE_DATASOURCES) {
    const list = JSON.parse(Buffer.from(process.env.OVERWRITE_DATASOURCES, 'base64').toString('utf8'))
    if (list[0]?.url) return list[0].url
  }
  return process.env.DATABASE_URL
}

const databaseUrl = resolveDatabaseUrl()
if (!databaseUrl) {
  console.error('engine-server: a database URL is required (--database-url or DATABASE_URL)')
  process.exit(2)
}
const flag = (name, envName) => {
  const v = args[name] ?? process.env[envName]
  return v !== undefined && v !== false && v !== '' && v !== '0' && v !== 'false'
}
const telemetryInResponse = flag('enable-telemetry-in-response', 'ENGINE_TELEMETRY_IN_RESPONSE')
const metricsEnabled = flag('enable-metrics', 'ENGINE_METRICS')
const pool = createPool(databaseUrl)
const metrics = metricsEnabled ? createMetrics(pool) : null
const engine = await createEngine({ datamodel: resolveDatamodel(), pool, telemetry: telemetryInResponse, metrics })
const info = engineBuildInfo()

function parseError(message) {
  return {
    is_panic: false,
    message: `Error parsing Json query. Ensure that engine protocol of the client and the engine matches. ${message}`,
    backtrace: null,
  }
}

async function handle(req, res) {
  const t0 = process.hrtime.bigint()
  const elapsed = () => [['x-elapsed', String((process.hrtime.bigint() - t0) / 1000n)]]
  const { pathname } = new URL(req.url, 'http://127.0.0.1')
  const traceparent = req.headers.traceparent
  // telemetry: per-call context; the engine fills tel.extensions, withExtensions splices it
  const tel = telemetryInResponse ? { capture: captureHeader(req) } : undefined
  const ext = (out) => withExtensions(out, tel?.extensions)

  if (req.method === 'POST' && pathname.startsWith('/transaction')) {
    const body = await readBody(req)
    const parts = pathname.split('/')
    if (pathname === '/transaction/start') {
      try {
        JSON.parse(body)
      } catch {
        return send(res, 400, 'Invalid transaction options', [['content-type', 'text/plain']])
      }
      const out = await engine.startTransaction(body, { traceparent, telemetry: tel })
      return sendJson(res, transactionStatus(out), ext(out), elapsed())
    }
    if (parts.length === 4 && (parts[3] === 'commit' || parts[3] === 'rollback')) {
      const out =
        parts[3] === 'commit'
          ? await engine.commitTransaction(parts[2], { traceparent, telemetry: tel })
          : await engine.rollbackTransaction(parts[2], { traceparent, telemetry: tel })
      return sendJson(res, transactionStatus(out), ext(out), elapsed())
    }
    return send(res, 400, `wrong transaction handler path: ${pathname}`, [['content-type', 'text/plain']])
  }
  if (metrics && (req.method === 'GET' || req.method === 'POST') && pathname.startsWith('/metrics')) {
    return sendMetrics(res, metrics, req.url, await readBody(req), send)
  }
  if (req.method === 'POST' && pathname === '/') {
    const body = await readBody(req)
    try {
      JSON.parse(body)
    } catch (err) {
      return sendJson(res, 422, parseError(err.message), elapsed())
    }
    const txId = req.headers['x-transaction-id']
    const out = await engine.query(body, { traceparent, txId, telemetry: tel })
    return sendJson(res, 200, ext(out), elapsed())
  }
  if (req.method === 'GET') {
    if (pathname === '/status') return sendJson(res, 200, { status: 'ok' }, elapsed())
    if (pathname === '/boot_trace') return sendJson(res, 200, { spans: [] }, elapsed())
    if (pathname === '/server_info')
      return sendJson(res, 200, { commit: info.commit, version: '6.19.0', primary_connector: 'postgresql' }, elapsed())
    if (pathname === '/_harness/pool') return sendJson(res, 200, poolStats(pool))
  }
  await readBody(req)
  return send(res, 404, '', elapsed())
}

const port = Number(args.port ?? process.env.PORT ?? 0)
const { port: actual } = await listen(handle, {
  port,
  printReady: !cliMode,
  info: {
    kind: 'engine',
    commit: info.commit,
    pool_max: pool.options.max,
    ...(telemetryInResponse ? { telemetry_in_response: true } : {}),
    ...(metricsEnabled ? { metrics: true } : {}),
  },
  onClose: async () => {
    await engine.disconnect().catch(() => {})
    await pool.end()
  },
})
if (cliMode) {
  // The Rust binary's start-up log line (JSON log format); BinaryEngine parses the port from it.
  console.log(
    JSON.stringify({
      timestamp: new Date().toISOString(),
      level: 'INFO',
      fields: { message: `Started query engine http server on http://127.0.0.1:${actual}`, ip: '127.0.0.1', port: String(actual) },
      target: 'query_engine::server',
    }),
  )
}
