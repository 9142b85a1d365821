// `/metrics` for the 6.19 engine servers (`--enable-metrics`, env ENGINE_METRICS=1).
//
// HONEST NOTE: this is a stand-in, not the Rust engine's metrics. The Wasm engine these servers
// run has no metrics at all (`QueryEngine.metrics()` throws "Metrics is not enabled in Wasm."),
// so this module measures the same things itself and answers in the query-engine binary's
// documented formats (docs/protocols.md §A.8; prisma-engines `libs/metrics`, Prisma >= 5.6 help
// texts): Prometheus text `text/plain; version=0.0.4` or, when the query string contains
// `format=json`, the JSON shape `{"counters","gauges","histograms"}`. Every value is a real
// measurement of this process:
//
//   prisma_client_queries_total                 operations answered by POST / (a batch counts each item)
//   prisma_client_queries_active                operations currently being executed (batch: all its items)
//   prisma_client_queries_duration_histogram_ms one sample per operation = wall time of its request
//   prisma_datasource_queries_total             SQL statements sent on the node-postgres pool's clients
//   prisma_datasource_queries_duration_histogram_ms  their durations (client.query() start to answer)
//   prisma_pool_connections_opened_total        pool 'connect' events (a new connection)
//   prisma_pool_connections_closed_total        pool 'remove' events
//   prisma_pool_connections_open / idle / busy  pg.Pool totalCount / idleCount / totalCount - idleCount
//   prisma_client_queries_wait                  pg.Pool waitingCount (callers queued for a connection)
//   prisma_client_queries_wait_histogram_ms     time each pool.connect() waited (also when it timed out)
//
// Where the Rust engine differs: its per-operation timings come from inside the engine (a batch
// item is timed alone), it counts a compacted findUnique batch as one operation, and mobc's pool
// gauges are its own bookkeeping; here they come from pg.Pool. The formats are exact.
import { performance } from 'node:perf_hooks'

/** Histogram upper bounds in ms (`HISTOGRAM_BOUNDS`, unchanged 4.x -> 6.x). */
export const HISTOGRAM_BOUNDS = [0, 1, 5, 10, 50, 100, 500, 1000, 5000, 50000]

// The 12 families with their >= 5.6 help texts (libs/metrics/src/lib.rs), by type; each list is
// in the order the engine prints them (sorted by name).
const COUNTERS = [
  ['prisma_client_queries_total', 'The total number of Prisma Client queries executed'],
  ['prisma_datasource_queries_total', 'The total number of datasource queries executed'],
  ['prisma_pool_connections_closed_total', 'The total number of pool connections closed'],
  ['prisma_pool_connections_opened_total', 'The total number of pool connections opened'],
]
const GAUGES = [
  ['prisma_client_queries_active', 'The number of currently active Prisma Client queries'],
  ['prisma_client_queries_wait', 'The number of datasource queries currently waiting for a free connection'],
  ['prisma_pool_connections_busy', 'The number of pool connections currently executing datasource queries'],
  ['prisma_pool_connections_idle', 'The number of pool connections that are not busy running a query'],
  ['prisma_pool_connections_open', 'The number of pool connections currently open'],
]
const HISTOGRAMS = [
  ['prisma_client_queries_duration_histogram_ms', 'The distribution of the time Prisma Client queries took to run end to end'],
  ['prisma_client_queries_wait_histogram_ms', 'The distribution of the time all datasource queries spent waiting for a free connection'],
  ['prisma_datasource_queries_duration_histogram_ms', 'The distribution of the time datasource queries took to run'],
]

/** Rust `{}` (Display) of an f64: `7.0` -> `7`, never exponent notation. */
function f64Display(x) {
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : x < 0 ? '-inf' : 'NaN'
  if (Number.isInteger(x)) return BigInt(x).toString()
  const s = String(x)
  if (!/e/i.test(s)) return s
  return x.toFixed(20).replace(/0+$/, '')
}

/** serde_json rendering of an f64: integral values keep `.0` (`7.0`, `[10.0,1]`). */
function f64Json(x) {
  if (!Number.isFinite(x)) return 'null'
  return Number.isInteger(x) && Math.abs(x) < 1e16 ? `${x}.0` : String(x)
}

const escapeLabel = (v) => String(v).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')

function promLabels(pairs) {
  return pairs.length ? `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}` : ''
}

/**
 * Global labels from a /metrics request body: a JSON object whose values are all strings
 * (what BinaryEngine sends); anything else means no global labels.
 */
export function parseGlobalLabels(body) {
  if (!body) return {}
  let parsed
  try {
    parsed = JSON.parse(body)
  } catch {
    return {}
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return {}
  if (!Object.values(parsed).every((v) => typeof v === 'string')) return {}
  return parsed
}

/** True when the request asks for JSON: the raw query string contains `format=json`. */
export function wantsJson(url) {
  const q = url.indexOf('?')
  return q >= 0 && url.slice(q + 1).includes('format=json')
}

/** A metrics registry fed by one pg.Pool (instrumented here) and by the engine wrapper. */
export function createMetrics(pool) {
  const counters = Object.fromEntries(COUNTERS.map(([name]) => [name, 0]))
  let active = 0
  // name -> {buckets: per-bucket (non-cumulative) counts, sum, count}; absent until first sample
  const histograms = new Map()

  function observe(name, ms) {
    let h = histograms.get(name)
    if (!h) histograms.set(name, (h = { buckets: HISTOGRAM_BOUNDS.map(() => 0), sum: 0, count: 0 }))
    const idx = HISTOGRAM_BOUNDS.findIndex((b) => ms <= b)
    if (idx >= 0) h.buckets[idx] += 1
    h.sum += ms
    h.count += 1
  }

  function gauges() {
    const open = pool.totalCount
    const idle = pool.idleCount
    return {
      prisma_client_queries_active: active,
      prisma_client_queries_wait: pool.waitingCount,
      prisma_pool_connections_busy: Math.max(0, open - idle),
      prisma_pool_connections_idle: idle,
      prisma_pool_connections_open: open,
    }
  }

  // --- pool instrumentation -------------------------------------------------------------
  const wrapClient = (client) => {
    const query = client.query
    client.query = function (config, values, callback) {
      // Submittables (cursors, streams) are passed through unmeasured; the engine uses none.
      if (config && typeof config.submit === 'function') return query.apply(this, arguments)
      const t0 = performance.now()
      const done = () => {
        counters.prisma_datasource_queries_total += 1
        observe('prisma_datasource_queries_duration_histogram_ms', performance.now() - t0)
      }
      if (typeof values === 'function') {
        callback = values
        values = undefined
      }
      if (typeof callback === 'function') {
        return query.call(this, config, values, (err, res) => {
          done()
          callback(err, res)
        })
      }
      const result = query.call(this, config, values)
      if (result && typeof result.then === 'function') {
        return result.then(
          (res) => (done(), res),
          (err) => {
            done()
            throw err
          },
        )
      }
      done()
      return result
    }
  }
  pool.on('connect', (client) => {
    counters.prisma_pool_connections_opened_total += 1
    wrapClient(client)
  })
  pool.on('remove', () => {
    counters.prisma_pool_connections_closed_total += 1
  })
  const connect = pool.connect
  pool.connect = function (callback) {
    const t0 = performance.now()
    const waited = () => observe('prisma_client_queries_wait_histogram_ms', performance.now() - t0)
    if (typeof callback === 'function') {
      return connect.call(this, (err, client, release) => {
        waited()
        callback(err, client, release)
      })
    }
    return connect.call(this).then(
      (client) => (waited(), client),
      (err) => {
        waited()
        throw err
      },
    )
  }

  return {
    /** Call when `n` operations start executing; returns the function to call when they end. */
    startOperations(n) {
      const t0 = performance.now()
      active += n
      let ended = false
      return () => {
        if (ended) return
        ended = true
        active -= n
        counters.prisma_client_queries_total += n
        const ms = performance.now() - t0
        for (let i = 0; i < n; i++) observe('prisma_client_queries_duration_histogram_ms', ms)
      }
    },

    /** Prometheus text exposition (cumulative buckets incl. +Inf), families in engine order. */
    prometheus(globalLabels = {}) {
      const base = Object.entries(globalLabels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      const g = gauges()
      let out = ''
      for (const [name, help] of COUNTERS) {
        out += `# HELP ${name} ${help}\n# TYPE ${name} counter\n${name}${promLabels(base)} ${counters[name]}\n\n`
      }
      for (const [name, help] of GAUGES) {
        out += `# HELP ${name} ${help}\n# TYPE ${name} gauge\n${name}${promLabels(base)} ${f64Display(g[name])}\n\n`
      }
      for (const [name, help] of HISTOGRAMS) {
        const h = histograms.get(name)
        if (!h) continue
        out += `# HELP ${name} ${help}\n# TYPE ${name} histogram\n`
        let cumulative = 0
        HISTOGRAM_BOUNDS.forEach((bound, i) => {
          cumulative += h.buckets[i]
          out += `${name}_bucket${promLabels([...base, ['le', f64Display(bound)]])} ${cumulative}\n`
        })
        out += `${name}_bucket${promLabels([...base, ['le', '+Inf']])} ${h.count}\n`
        out += `${name}_sum${promLabels(base)} ${f64Display(h.sum)}\n`
        out += `${name}_count${promLabels(base)} ${h.count}\n\n`
      }
      return out
    },

    /** JSON format (per-bucket counts, no +Inf), serialised like serde_json (f64 keep `.0`). */
    json(globalLabels = {}) {
      const labels = JSON.stringify(globalLabels)
      const g = gauges()
      const item = (name, value, help) =>
        `{"key":${JSON.stringify(name)},"labels":${labels},"value":${value},"description":${JSON.stringify(help)}}`
      const counterItems = COUNTERS.map(([name, help]) => item(name, String(counters[name]), help))
      const gaugeItems = GAUGES.map(([name, help]) => item(name, f64Json(g[name]), help))
      const histItems = HISTOGRAMS.filter(([name]) => histograms.has(name)).map(([name, help]) => {
        const h = histograms.get(name)
        const buckets = HISTOGRAM_BOUNDS.map((b, i) => `[${f64Json(b)},${h.buckets[i]}]`).join(',')
        return item(name, `{"buckets":[${buckets}],"sum":${f64Json(h.sum)},"count":${h.count}}`, help)
      })
      return `{"counters":[${counterItems.join(',')}],"gauges":[${gaugeItems.join(',')}],"histograms":[${histItems.join(',')}]}`
    },
  }
}

/**
 * Answers a `/metrics…` request (GET or POST, already matched by the caller). No `x-elapsed`:
 * the Rust server's metrics handler returns before that header is added.
 */
export function sendMetrics(res, metrics, url, body, send) {
  const labels = parseGlobalLabels(body)
  if (wantsJson(url)) return send(res, 200, metrics.json(labels), [['content-type', 'application/json']])
  return send(res, 200, metrics.prometheus(labels), [['content-type', 'text/plain; version=0.0.4']])
}
