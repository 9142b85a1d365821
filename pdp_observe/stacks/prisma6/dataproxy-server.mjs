// A Data Proxy endpoint (docs/protocols.md §B) in front of the real Prisma 6.19.0 Wasm engine,
// modelled on Prisma's own emulators and the recorded dp619 traffic:
//   POST /:clientVersion/:schemaHash/graphql              query/batch, 404 SchemaMissing until uploaded
//   PUT  /:clientVersion/:schemaHash/schema               base64 schema; 200 text/plain <hash>
//   POST /:clientVersion/:schemaHash/transaction/start    {"id", "data-proxy": {"endpoint": …/itx/<id>}}
//   POST /:clientVersion/:schemaHash/itx/:id/graphql|commit|rollback
//   GET  /_harness/pool                                   pool gauges (harness extra)
// Every route needs `Authorization: Bearer <API_KEY>` (401 otherwise).
//
//   node dataproxy-server.mjs [--port N] [--database-url URL] [--api-key KEY]
//   env: PORT, DATABASE_URL, API_KEY (default "test"), POOL_MAX (default 4), POOL_TIMEOUT_MS
//
// Ready line on stdout: {"ready":true,"port":N,"kind":"dataproxy",...}.
import crypto from 'node:crypto'
import { parseArgs } from '../common/args.mjs'
import { createEngine, createPool, engineBuildInfo, loadQueryEngine, poolStats, transactionStatus } from './engine.mjs'
import { listen, readBody, send, sendJson } from './http-util.mjs'

const args = parseArgs(process.argv.slice(2))
const databaseUrl = args['database-url'] ?? process.env.DATABASE_URL
if (!databaseUrl) {
  console.error('dataproxy-server: a database URL is required (--database-url or DATABASE_URL)')
  process.exit(2)
}
const apiKey = String(args['api-key'] ?? process.env.API_KEY ?? 'test')
const pool = createPool(databaseUrl)
await loadQueryEngine()

/** schemaHash -> Promise<engine>; filled lazily by the client's schema upload. */
const engines = new Map()
const SCHEMA_MISSING = { EngineNotStarted: { reason: 'SchemaMissing' } }

async function handle(req, res) {
  const { pathname } = new URL(req.url, 'http://127.0.0.1')
  const body = await readBody(req)
  if (req.method === 'GET' && pathname === '/_harness/pool') return sendJson(res, 200, poolStats(pool))

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
      const started = createEngine({ datamodel, pool })
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

  if (action === 'graphql' && rest.length === 0) {
    return sendJson(res, 200, await engine.query(body, { traceparent }))
  }
  if (action === 'transaction' && rest.length === 1 && rest[0] === 'start') {
    const out = await engine.startTransaction(body, { traceparent })
    const status = transactionStatus(out)
    if (status !== 200) return sendJson(res, status, out)
    const { id } = JSON.parse(out)
    const endpoint = `http://${req.headers.host}/${clientVersion}/${schemaHash}/itx/${id}`
    return sendJson(res, 200, { id, 'data-proxy': { endpoint } })
  }
  if (action === 'itx' && rest.length === 2) {
    const [txId, op] = rest
    if (op === 'graphql') return sendJson(res, 200, await engine.query(body, { traceparent, txId }))
    if (op === 'commit' || op === 'rollback') {
      const out =
        op === 'commit'
          ? await engine.commitTransaction(txId, { traceparent })
          : await engine.rollbackTransaction(txId, { traceparent })
      return sendJson(res, transactionStatus(out), out)
    }
  }
  return send(res, 404, '', [])
}

const port = Number(args.port ?? process.env.PORT ?? 0)
await listen(handle, {
  port,
  info: { kind: 'dataproxy', commit: engineBuildInfo().commit, pool_max: pool.options.max },
  onClose: async () => {
    for (const e of engines.values()) await (await e).disconnect().catch(() => {})
    await pool.end()
  },
})
