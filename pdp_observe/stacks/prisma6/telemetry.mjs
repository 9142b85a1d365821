// Telemetry in the response (`--enable-telemetry-in-response`, env ENGINE_TELEMETRY_IN_RESPONSE=1),
// Gen 2 / Prisma 6.1+ semantics (docs/protocols.md §A.7): every query / transaction response
// carries `"extensions":{"traces":[…],"logs":[…]}` as its last key, filled per the request's
// `X-capture-telemetry` header.
//
// Where the data comes from (the real 6.19 Wasm engine, see engine.mjs):
// - traces: `QueryEngine.trace(requestId)` after each call returns the engine's own TraceData
//   `{"spans":[ExportedSpan…],"events":[]}` — exactly the Rust exporter's camelCase spans. The
//   Wasm engine only captures when the call's trace context has a *sampled* traceparent
//   (query-engine-common `start_trace`) and then captures spans only (`events` is always empty).
//   They are passed through as the engine made them, except that a synthetic marker the engine
//   left inside `db.query.text` (nested SELECTs) is replaced like on the wire (below).
// - logs: query events reach JS only through the engine's log callback (`logQueries: true`), as
//   a JSON line without request or span id. They are attributed by a per-request marker: a
//   capturing call runs with a synthetic sampled traceparent whose parent-id is unique, and the
//   engine appends it to the SQL (`… /* traceparent='00-…-<marker>-01' */`), so the query text of
//   the event names its request. The adapter wrapper puts back what the Rust binary would have
//   sent (the client's own sampled traceparent, or no comment), so PostgreSQL and the logged
//   `query` see the same SQL as with the Rust binary.
import crypto from 'node:crypto'
import { performance } from 'node:perf_hooks'

const LOG_LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'query'])
const NOTHING = Object.freeze(new Set())

/**
 * `CaptureSettings::from_str`: split on ",", trim, each token `tracing` or a log level
 * (case-sensitive). One unknown token makes the whole header invalid: nothing is captured.
 * Returns a Set of targets ("tracing" and/or levels); empty = capture nothing.
 */
export function parseCaptureSettings(value) {
  if (typeof value !== 'string') return NOTHING
  const targets = new Set()
  for (const raw of value.split(',')) {
    const token = raw.trim()
    if (token === 'tracing' || LOG_LEVELS.has(token)) targets.add(token)
    else return NOTHING
  }
  return targets
}

/** The first `X-capture-telemetry` header of a node:http request (name case-insensitive). */
export function captureHeader(req) {
  const values = req.headersDistinct?.['x-capture-telemetry']
  if (values) return values[0]
  return req.headers['x-capture-telemetry']
}

const HEX = /^\+?[0-9a-fA-F]+$/

/**
 * `telemetry::TraceParent::from_str` (6.1+): "00-<hex>-<hex>-<hex>", ids of any length as long
 * as they fit u128 / u64 / u8; extra parts are ignored. Returns null when it does not parse, else
 * {traceId, rendered (the engine's Display form, used in its SQL comment), sampled}.
 */
export function parseTraceParent(value) {
  if (typeof value !== 'string') return null
  const parts = value.split('-')
  if (parts[0] !== '00' || parts.length < 4) return null
  const num = (s, bits) => {
    if (!HEX.test(s)) return null
    const n = BigInt('0x' + s.replace(/^\+/, ''))
    return n < 1n << BigInt(bits) ? n : null
  }
  const trace = num(parts[1], 128)
  const span = num(parts[2], 64)
  const flags = num(parts[3], 8)
  if (trace === null || span === null || flags === null) return null
  const traceId = trace.toString(16).padStart(32, '0')
  return {
    traceId,
    rendered: `00-${traceId}-${span.toString(16).padStart(16, '0')}-${flags.toString(16).padStart(2, '0')}`,
    sampled: (flags & 1n) === 1n,
  }
}

/** HrTime `[seconds, nanos]` of now (wall clock). */
export function hrNow() {
  const ns = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6))
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)]
}

/**
 * Appends `"extensions": ext` as the last key of a JSON object body without re-serialising the
 * rest (the engine's bytes stay as they are). Non-object bodies are returned unchanged.
 */
export function withExtensions(body, ext) {
  if (ext === undefined || typeof body !== 'string') return body
  const trimmed = body.trimEnd()
  if (!trimmed.startsWith('{') || !trimmed.endsWith('}')) return body
  const inner = trimmed.slice(1, -1).trim()
  const json = typeof ext === 'string' ? ext : JSON.stringify(ext)
  return trimmed.slice(0, -1) + (inner === '' ? '' : ',') + '"extensions":' + json + '}'
}

const COMMENT = / \/\* traceparent='00-[0-9a-f]{32}-([0-9a-f]{16})-01' \*\//

/**
 * Per-engine capture bookkeeping: markers, the SQL rewrite, attribution of log-callback events.
 */
export function createCapture() {
  const prefix = crypto.randomBytes(4).toString('hex')
  let counter = 0
  const byMarker = new Map() // marker -> ctx
  const inflight = new Map() // requestId -> ctx | null (every call on this engine)

  /** The ctx whose synthetic comment is in `sql`, or null. */
  const ctxOf = (sql) => {
    const m = typeof sql === 'string' ? COMMENT.exec(sql) : null
    return m ? byMarker.get(m[1]) ?? null : null
  }

  return {
    /**
     * Registers a call. `settings` = parsed header; returns {ctx, traceparent to give the engine}.
     * Calls that capture nothing keep the client's traceparent as is.
     */
    begin(requestId, settings, clientTraceparent) {
      if (settings.size === 0) {
        inflight.set(requestId, null)
        return { ctx: null, traceparent: clientTraceparent }
      }
      counter = (counter + 1) >>> 0
      const marker = prefix + counter.toString(16).padStart(8, '0')
      const client = parseTraceParent(clientTraceparent)
      const traceId = client?.traceId ?? crypto.randomBytes(16).toString('hex')
      const synthetic = `00-${traceId}-${marker}-01`
      const ctx = {
        requestId,
        settings,
        marker,
        comment: ` /* traceparent='${synthetic}' */`,
        // what the Rust binary appends: the client's traceparent if sampled, else nothing
        replacement: client?.sampled ? ` /* traceparent='${client.rendered}' */` : '',
        events: [],
      }
      byMarker.set(marker, ctx)
      inflight.set(requestId, ctx)
      return { ctx, traceparent: synthetic }
    },

    end(requestId) {
      const ctx = inflight.get(requestId)
      inflight.delete(requestId)
      if (ctx) byMarker.delete(ctx.marker)
    },

    /** SQL on its way to the driver: the synthetic comment becomes the Rust binary's. */
    rewriteSql(sql) {
      const ctx = ctxOf(sql)
      return ctx ? sql.replaceAll(ctx.comment, ctx.replacement) : sql
    },

    /**
     * One line from the engine's log callback. A query event whose SQL carries a marker belongs
     * to that request. Anything else (other levels; SQL the engine sends without the traceparent
     * comment, e.g. the COMMIT/ROLLBACK of an itx) names no request: it is attributed only when
     * exactly one call is in flight on this engine, and dropped otherwise.
     */
    onLogLine(line) {
      let ev
      try {
        ev = JSON.parse(line)
      } catch {
        return
      }
      if (!ev || typeof ev !== 'object') return
      const isQuery = ev.item_type === 'query' || (ev.is_query === true && typeof ev.query === 'string')
      let ctx = isQuery ? ctxOf(ev.query) : null
      let sqlStripped = null
      if (ctx) {
        sqlStripped = ev.query.replaceAll(ctx.comment, '')
        ev.query = ev.query.replaceAll(ctx.comment, ctx.replacement)
      } else {
        if (inflight.size !== 1) return
        ctx = inflight.values().next().value
        if (!ctx) return
        if (isQuery) sqlStripped = String(ev.query ?? '')
      }
      const level = isQuery ? 'query' : String(ev.item_type ?? ev.level ?? 'trace').toLowerCase()
      if (!ctx.settings.has(level)) return
      const target = ev.module_path ?? ''
      const attributes = {}
      for (const [k, v] of Object.entries(ev)) {
        if (k !== 'level' && k !== 'module_path' && k !== 'item_type') attributes[k] = v
      }
      ctx.events.push({ level, target, timestamp: hrNow(), attributes, sqlStripped })
    },
  }
}

/**
 * The `extensions` object for a finished call: `traces` = the engine's spans if "tracing" was
 * asked, `logs` = the attributed events (ExportedEvent shape). An event's `spanId` is the
 * engine span it happened in: a query event gets the `prisma:engine:db_query` span with the same
 * SQL (in order), any other event the request's root span.
 *
 * Spans are the engine's, unchanged, with one exception: the engine strips only the trailing
 * traceparent comment from `db.query.text`, so a nested SELECT (aggregate, count) still shows
 * the synthetic marker there; it is replaced like on the wire (client's traceparent or nothing).
 */
export function buildExtensions(ctx, traceData) {
  if (!ctx) return { traces: [], logs: [] }
  const undo = (span) => {
    const attrs = span.attributes
    if (!attrs || !Object.values(attrs).some((v) => typeof v === 'string' && v.includes(ctx.comment))) return span
    const fixed = {}
    for (const [k, v] of Object.entries(attrs)) {
      fixed[k] = typeof v === 'string' ? v.replaceAll(ctx.comment, ctx.replacement) : v
    }
    return { ...span, attributes: fixed }
  }
  const raw = Array.isArray(traceData?.spans) ? traceData.spans : []
  const spans = raw.map(undo)
  const root = raw.find((s) => s.parentId === null) ?? null
  const byId = (a, b) => {
    const x = BigInt(a.id)
    const y = BigInt(b.id)
    return x < y ? -1 : x > y ? 1 : 0
  }
  const dbQueries = raw.filter((s) => s.name === 'prisma:engine:db_query').sort(byId)
  const textOf = (s) => String(s.attributes?.['db.query.text'] ?? '').replaceAll(ctx.comment, '')
  const used = new Set()
  const logs = ctx.events.map((ev) => {
    let span = null
    if (ev.sqlStripped !== null) {
      span = dbQueries.find((s) => !used.has(s) && textOf(s) === ev.sqlStripped) ?? null
      if (span) used.add(span)
    }
    const spanId = (span ?? root)?.id ?? null
    return { spanId, target: ev.target, level: ev.level, timestamp: ev.timestamp, attributes: ev.attributes }
  })
  return { traces: ctx.settings.has('tracing') ? spans : [], logs }
}
