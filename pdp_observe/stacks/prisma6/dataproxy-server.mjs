// A Data Proxy endpoint (docs/protocols.md §B) in front of the real Prisma 6.19.0 Wasm engine,
// modelled on Prisma's own emulators and the recorded dp619 traffic:
//   POST /:clientVersion/:schemaHash/graphql              query/batch, 404 SchemaMissing until uploaded
//   PUT  /:clientVersion/:schemaHash/schema               base64 schema; 200 text/plain <hash>
//   POST /:clientVersion/:schemaHash/transaction/start    {"id", "data-proxy": {"endpoint": …/itx/<id>}}
//   POST /:clientVersion/:schemaHash/itx/:id/graphql|commit|rollback
//   GET  /_harness/pool                                   pool gauges (harness extra)
//   GET|POST /metrics…                                    with --enable-metrics (harness extra, no auth;
//                                                         the query-engine binary's /metrics, metrics.mjs)
// Every other route needs `Authorization: Bearer <API_KEY>` (401 otherwise).
//
//   node dataproxy-server.mjs [--port N] [--database-url URL] [--api-key KEY]
//                             [--enable-telemetry-in-response] [--enable-metrics]
//   env: PORT, DATABASE_URL, API_KEY (default "test"), POOL_MAX (default 4), POOL_TIMEOUT_MS,
//        ENGINE_TELEMETRY_IN_RESPONSE=1 (= the flag), ENGINE_METRICS=1 (= the flag)
//
// --enable-telemetry-in-response: the engine runs as with `query-engine
// --enable-telemetry-in-response` (telemetry.mjs): the answers of …/graphql, …/transaction/start
// and …/itx/<id>/graphql|commit|rollback end with "extensions":{"traces":[…],"logs":[…]} per the
// X-capture-telemetry header the DataProxyEngine sends (empty arrays without / invalid header).
//
// Ready line on stdout: {"ready":true,"port":N,"kind":"dataproxy",...}.
import crypto from 'node:crypto'
import { parseArgs } from '../common/args.mjs'
import { createEngine, createPool, engineBuildInfo, loadQueryEngine, poolStats, transactionStatus } from './engine.mjs'
import { listen, readBody, send, sendJson } from './http-util.mjs'
import { createMetrics, sendMetrics } from './metrics.mjs'
import { captureHeader, withExtensions } from './telemetry.mjs'

const args = parseArgs(process.argv.slice(2))
const databaseUrl = args['database-url'] ?? process.env.DATABASE_URL
if (!databaseUrl) {
  console.error('dataproxy-server: a database URL is required (--database-url or DATABASE_URL)')
  process.exit(2)
}
const apiKey = String(args['api-key'] ?? process.env.API_KEY ?? 'test')
const flag = (name, envName) => {
  const v = args[name] ?? process.env[envName]
  return v !== undefined && v !== false && v !== '' && v !== '0' && v !== 'false'
}
const telemetryInResponse = flag('enable-telemetry-in-response', 'ENGINE_TELEMETRY_IN_RESPONSE')
const metricsEnabled = flag('enable-metrics', 'ENGINE_METRICS')
const pool = createPool(databaseUrl)
const metrics = metricsEnabled ? createMetrics(pool) : null
await loadQueryEngine()

/** schemaHash -> Promise<engine>; filled lazily by the client's schema upload. */
const engines = new Map()
const SCHEMA_MISSING = { EngineNotStarted: { reason: 'SchemaMissing' } }

async function handle(req, res) {
  const { pathname } = new URL(req.url, 'http://127.0.0.1')
  const body = await readBody(req)
  if (req.method === 'GET' && pathname === '/_harness/pool') return sendJson(res, 200, poolStats(pool))
  if (metrics && (req.method === 'GET' || req.method === 'POST') && pathname.startsWith('/metrics')) {
    return sendMetrics(res, metrics, req.url, body, send)
  }

  if (req.headers.authorization !== `Bearer ${apiKey}`) {
    return send(res, 401, 'Unauthorized', [['content-type', 'text/plain']])
  }
  const parts = pathname.split('/').filter(Boolean)
  if (parts.length < 3) return send(res, 404, '', [])
  const [clientVersion, schemaHash, action, ...rest] = parts
  const traceparent = req.headers.traceparent

  if (req.method === 'PUT' && action === 'schema' && rest.length === 0) {
    const actual = crypto.createHash('sha256').update(body).digest('hex')
    if (actual !== schemaHash) return send(res, 400, 'Schema hash mismatch', [['content-type', 'text/plain']])
    if (!engines.has(schemaHash)) {
      const datamodel = Buffer.from(body, 'base64').toString('utf8')
      const started = createEngine({ datamodel, pool, telemetry: telemetryInResponse, metrics })
      engines.set(schemaHash, started)
      started.catch(() => engines.delete(schemaHash))
    }
    try {
      await engines.get(schemaHash)
    } catch (err) {
      return sendJson(res, 500, { EngineNotStarted: { reason: { EngineStartupError: { logs: [], msg: String(err?.message ?? err) } } } })
    }
    return send(res, 200, schemaHash, [['content-type', 'text/plain']])
  }
  if (req.method !== 'POST') return send(res, 404, '', [])

  const engine = await engines.get(schemaHash)
  if (!engine) return sendJson(res, 404, SCHEMA_MISSING)

  // telemetry: per-call context; the engine fills tel.extensions, withExtensions splices it
  const tel = telemetryInResponse ? { capture: captureHeader(req) } : undefined
  const ext = (out) => withExtensions(out, tel?.extensions)

  if (action === 'graphql' && rest.length === 0) {
    return sendJson(res, 200, ext(await engine.query(body, { traceparent, telemetry: tel })))
  }
  if (action === 'transaction' && rest.length === 1 && rest[0] === 'start') {
    const out = await engine.startTransaction(body, { traceparent, telemetry: tel })
    const status = transactionStatus(out)
    if (status !== 200) return sendJson(res, status, ext(out))
    const { id } = JSON.parse(out)
    const endpoint = `http://${req.headers.host}/${clientVersion}/${schemaHash}/itx/${id}`
    const dpBody = { id, 'data-proxy': { endpoint } }
    return sendJson(res, 200, tel ? ext(JSON.stringify(dpBody)) : dpBody)
  }
  if (action === 'itx' && rest.length === 2) {
    const [txId, op] = rest
    if (op === 'graphql') return sendJson(res, 200, ext(await engine.query(body, { traceparent, txId, telemetry: tel })))
    if (op === 'commit' || op === 'rollback') {
      const out =
        op === 'commit'
          ? await engine.commitTransaction(txId, { traceparent, telemetry: tel })
          : await engine.rollbackTransaction(txId, { traceparent, telemetry: tel })
      return sendJson(res, transactionStatus(out), ext(out))
    }
  }
  return send(res, 404, '', [])
}

const port = Number(args.port ?? process.env.PORT ?? 0)
await listen(handle, {
  port,
  info: {
    kind: 'dataproxy',
    commit: engineBuildInfo().commit,
    pool_max: pool.options.max,
    ...(telemetryInResponse ? { telemetry_in_response: true } : {}),
    ...(metricsEnabled ? { metrics: true } : {}),
  },
  onClose: async () => {
    for (const e of engines.values()) await (await e).disconnect().catch(() => {})
    await pool.end()
  },
})
