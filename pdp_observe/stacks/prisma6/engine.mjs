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

/**
 * One engine instance for one Prisma schema (datamodel text), connected through `pool`.
 * Methods return the engine's JSON response *strings*, exactly what the Rust binary would send.
 */
export async function createEngine({ datamodel, pool, logQueries = false, onLog = () => {} }) {
  const QueryEngine = await loadQueryEngine()
  const adapter = bindAdapter(await new PrismaPg(pool).connect())
  const engine = new QueryEngine(
    {
      datamodel,
      env: {},
      logQueries,
      ignoreEnvVarErrors: true,
      datasourceOverrides: {},
      logLevel: process.env.QE_LOG_LEVEL ?? 'error',
      configDir: process.cwd(),
      engineProtocol: 'json',
      enableTracing: false,
    },
    (line) => onLog(line),
    adapter,
  )
  const headers = (traceparent) => JSON.stringify(traceparent ? { traceparent } : {})
  const fix = (out) => translateAdapterErrors(out, adapter.errorRegistry, pool)
  await engine.connect(headers(), nextRequestId())
  return {
    /** POST / : single or batch JSON-protocol body (string). */
    query: async (body, { traceparent, txId } = {}) =>
      fix(await engine.query(body, headers(traceparent), txId ?? undefined, nextRequestId())),
    /** {"max_wait","timeout","isolation_level"?} body (string) -> '{"id": …}' or a bare error. */
    startTransaction: async (body, { traceparent } = {}) =>
      fix(await engine.startTransaction(body, headers(traceparent), nextRequestId())),
    commitTransaction: async (id, { traceparent } = {}) =>
      fix(await engine.commitTransaction(id, headers(traceparent), nextRequestId())),
    rollbackTransaction: async (id, { traceparent } = {}) =>
      fix(await engine.rollbackTransaction(id, headers(traceparent), nextRequestId())),
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
