// The real Prisma 6.19.0 query engine (the Wasm build shipped inside @prisma/client@6.19.0)
// running SQL through @prisma/adapter-pg on a node-postgres pool.
//
// Shared by engine-server.mjs (query-engine HTTP API) and dataproxy-server.mjs (Data Proxy API).
import { createRequire } from 'node:module'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import pg from 'pg'
import { PrismaPg } from '@prisma/adapter-pg'
import { bindAdapter } from '@prisma/driver-adapter-utils'
import { buildExtensions, createCapture, parseCaptureSettings } from './telemetry.mjs'

const require = createRequire(import.meta.url)
const RUNTIME_DIR = path.join(path.dirname(require.resolve('@prisma/client/package.json')), 'runtime')

let queryEngineClass = null
let buildInfo = null

/** Instantiates the Wasm module once per process and returns its QueryEngine class. */
export async function loadQueryEngine() {
  if (queryEngineClass) return queryEngineClass
  const runtime = await import(pathToFileURL(path.join(RUNTIME_DIR, 'query_engine_bg.postgresql.mjs')).href)
  const { wasm } = await import(pathToFileURL(path.join(RUNTIME_DIR, 'query_engine_bg.postgresql.wasm-base64.mjs')).href)
  const module = new WebAssembly.Module(Buffer.from(wasm, 'base64'))
  const instance = new WebAssembly.Instance(module, { './query_engine_bg.js': runtime })
  runtime.__wbg_set_wasm(instance.exports)
  instance.exports.__wbindgen_start()
  buildInfo = runtime.getBuildTimeInfo()
  queryEngineClass = runtime.QueryEngine
  return queryEngineClass
}

/** {commit, version} of the Wasm engine build (commit 2ba551f3… for 6.19.0). */
export function engineBuildInfo() {
  return buildInfo
}

/**
 * node-postgres pool. POOL_MAX (default 4, like the recorded qe619 stack) and
 * POOL_TIMEOUT_MS (wait for a free connection, default 10000 = pool_timeout 10 s).
 */
export function createPool(databaseUrl, env = process.env) {
  return new pg.Pool({
    connectionString: databaseUrl,
    max: Number(env.POOL_MAX ?? 4),
    connectionTimeoutMillis: Number(env.POOL_TIMEOUT_MS ?? 10000),
  })
}

export function poolStats(pool) {
  return {
    max: pool.options.max,
    total: pool.totalCount,
    idle: pool.idleCount,
    waiting: pool.waitingCount,
  }
}

let requestCounter = 0n
const nextRequestId = () => String(++requestCounter)

/** Number of JSON-protocol operations in a POST / body (a batch counts each item). */
function operationCount(body) {
  try {
    const parsed = JSON.parse(body)
    return Array.isArray(parsed?.batch) ? parsed.batch.length : 1
  } catch {
    return 1
  }
}

/**
 * The driver adapter, with every SQL text passed through `rewriteSql` (telemetry: the
 * synthetic traceparent comment of a capturing request becomes the Rust binary's).
 */
function rewritingAdapter(adapter, rewriteSql) {
  const wrapQueryable = (q) => {
    for (const name of ['queryRaw', 'executeRaw']) {
      const fn = q[name].bind(q)
      q[name] = (query) => {
        const sql = rewriteSql(query.sql)
        return fn(sql === query.sql ? query : { ...query, sql })
      }
    }
    return q
  }
  wrapQueryable(adapter)
  const startTransaction = adapter.startTransaction.bind(adapter)
  adapter.startTransaction = async (...args) => wrapQueryable(await startTransaction(...args))
  return adapter
}

/**
 * One engine instance for one Prisma schema (datamodel text), connected through `pool`.
 * Methods return the engine's JSON response *strings*, exactly what the Rust binary would send.
 *
 * Options (all off by default; off = the engine is created and called exactly as before):
 * - `telemetry`: Gen-2 telemetry in the response (telemetry.mjs). The engine is created with
 *   `enableTracing: true` and `logQueries: true`; every method then accepts
 *   `{telemetry: {capture: <X-capture-telemetry value>}}` and sets `telemetry.extensions` to
 *   the `{traces, logs}` object of that call (the caller splices it with `withExtensions`).
 * - `metrics`: a registry from metrics.mjs `createMetrics(pool)`; `query` reports its
 *   operations to it.
 */
export async function createEngine({ datamodel, pool, logQueries = false, onLog = () => {}, telemetry = false, metrics = null }) {
  const QueryEngine = await loadQueryEngine()
  const capture = telemetry ? createCapture() : null
  let rawAdapter = await new PrismaPg(pool).connect()
  if (capture) rawAdapter = rewritingAdapter(rawAdapter, capture.rewriteSql)
  const adapter = bindAdapter(rawAdapter)
  const logCallback = capture
    ? (line) => {
        capture.onLogLine(line)
        // query events are only produced for the capture; pass them on only if asked for
        if (logQueries || !line.includes('"item_type":"query"')) onLog(line)
      }
    : (line) => onLog(line)
  const engine = new QueryEngine(
    {
      datamodel,
      env: {},
      logQueries: capture ? true : logQueries,
      ignoreEnvVarErrors: true,
      datasourceOverrides: {},
      // with telemetry: the Rust binary's default filter level (QE_LOG_LEVEL, default info)
      logLevel: process.env.QE_LOG_LEVEL ?? (capture ? 'info' : 'error'),
      configDir: process.cwd(),
      engineProtocol: 'json',
      enableTracing: Boolean(capture),
    },
    logCallback,
    adapter,
  )
  const headers = (traceparent) => JSON.stringify(traceparent ? { traceparent } : {})
  const fix = (out) => translateAdapterErrors(out, adapter.errorRegistry, pool)

  /**
   * Runs one engine call `invoke(traceContextJson, requestId)`. With telemetry: registers the
   * capture, and afterwards always drains the engine's trace store for that request id (the
   * engine also captures on its own when the client's traceparent is sampled).
   */
  const call = async (invoke, { traceparent, telemetry: tel } = {}) => {
    if (!capture) return invoke(headers(traceparent), nextRequestId())
    const requestId = nextRequestId()
    const settings = parseCaptureSettings(tel?.capture)
    const started = capture.begin(requestId, settings, traceparent)
    let traceData
    try {
      return await invoke(headers(started.traceparent), requestId)
    } finally {
      capture.end(requestId)
      try {
        const raw = await engine.trace(requestId)
        traceData = raw ? JSON.parse(raw) : undefined
      } catch {
        traceData = undefined
      }
      if (tel) tel.extensions = buildExtensions(started.ctx, traceData)
    }
  }

  await engine.connect(headers(), nextRequestId())
  return {
    /** POST / : single or batch JSON-protocol body (string). */
    query: async (body, { traceparent, txId, telemetry: tel } = {}) => {
      const finish = metrics ? metrics.startOperations(operationCount(body)) : null
      try {
        return fix(
          await call((trace, requestId) => engine.query(body, trace, txId ?? undefined, requestId), { traceparent, telemetry: tel }),
        )
      } finally {
        finish?.()
      }
    },
    /** {"max_wait","timeout","isolation_level"?} body (string) -> '{"id": …}' or a bare error. */
    startTransaction: async (body, opts = {}) =>
      fix(await call((trace, requestId) => engine.startTransaction(body, trace, requestId), opts)),
    commitTransaction: async (id, opts = {}) =>
      fix(await call((trace, requestId) => engine.commitTransaction(id, trace, requestId), opts)),
    rollbackTransaction: async (id, opts = {}) =>
      fix(await call((trace, requestId) => engine.rollbackTransaction(id, trace, requestId), opts)),
    disconnect: async () => {
      await engine.disconnect(headers(), nextRequestId())
      engine.free?.()
    },
  }
}

/**
 * HTTP status for a bare user-facing error returned by a /transaction/* call
 * (query-engine `err_to_http_resp`): 504 acquisition timeout, 404 not found,
 * 422 closed/expired, 500 otherwise. Successful bodies get 200.
 */
export function transactionStatus(body) {
  let parsed
  try {
    parsed = JSON.parse(body)
  } catch {
    return 500
  }
  if (!parsed || typeof parsed !== 'object' || !('error_code' in parsed || 'is_panic' in parsed)) return 200
  const msg = String(parsed.message ?? '')
  if (msg.includes('Unable to start a transaction in the given time')) return 504
  if (msg.includes('Transaction not found')) return 404
  if (msg.includes('Transaction already closed') || msg.includes('expired transaction')) return 422
  return 500
}

/**
 * Errors thrown by JavaScript code under the adapter (e.g. node-postgres) reach the engine as
 * "GenericJs" errors and come back as P2036 "Error in external connector (id N)"; the N refers to
 * the adapter's error registry, which a library-engine client would consult. A binary engine has
 * no such registry, so resolve them here: a pool wait timeout becomes the Rust engine's P2024
 * (same wording as the real engines); anything else keeps P2036 and is logged to stderr.
 * Responses without P2036 are returned byte for byte.
 */
export function translateAdapterErrors(out, registry, pool) {
  if (typeof out !== 'string' || !out.includes('"P2036"')) return out
  let parsed
  try {
    parsed = JSON.parse(out)
  } catch {
    return out
  }
  const fixUfe = (ufe) => {
    if (!ufe || ufe.error_code !== 'P2036' || typeof ufe.meta?.id !== 'number') return null
    const cause = registry?.consumeError(ufe.meta.id)?.error
    const message = String(cause?.message ?? cause ?? '')
    if (/timeout exceeded when trying to connect/i.test(message)) {
      const limit = pool.options.max
      const timeout = Number(pool.options.connectionTimeoutMillis ?? 0) / 1000
      return {
        error: `Error in connector: Error creating a database connection. (Timed out fetching a connection from the pool (connection limit: ${limit}, in use: ${pool.totalCount}, pool timeout ${timeout}))`,
        user_facing_error: {
          is_panic: false,
          message: `Timed out fetching a new connection from the connection pool. More info: http://pris.ly/d/connection-pool (Current connection pool timeout: ${timeout}, connection limit: ${limit})`,
          meta: { connection_limit: limit, timeout },
          error_code: 'P2024',
        },
      }
    }
    console.error(`engine: external connector error ${ufe.meta.id}:`, cause)
    return null
  }
  const fixErrors = (errors) =>
    errors.map((e) => {
      const fixed = fixUfe(e.user_facing_error)
      if (!fixed) return e
      const idx = e.user_facing_error.batch_request_idx
      if (idx !== undefined) fixed.user_facing_error.batch_request_idx = idx
      return fixed
    })
  if (Array.isArray(parsed.errors)) parsed.errors = fixErrors(parsed.errors)
  if (Array.isArray(parsed.batchResult))
    parsed.batchResult = parsed.batchResult.map((item) => (Array.isArray(item?.errors) ? { ...item, errors: fixErrors(item.errors) } : item))
  if (parsed.error_code === 'P2036') {
    const fixed = fixUfe(parsed)
    if (fixed) parsed = fixed.user_facing_error
  }
  return JSON.stringify(parsed)
}
