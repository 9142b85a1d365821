// Prisma 7.2.0 query-plan executor (stock @prisma/query-plan-executor) served over HTTP.
//
//   node qpe-server.mjs [--port N] [--database-url URL]
//   env: PORT, DATABASE_URL, QUERY_TIMEOUT (ISO-8601 duration, default PT5M), LOG_LEVEL (default off)
//
// Binds 127.0.0.1 only; prints one JSON line {"ready":true,"port":N,...} on stdout when listening.
import { context } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { serve } from '@hono/node-server'
import {
  Server,
  createConsoleLogger,
  parseDuration,
  parseSize,
  version,
  withActiveLogger,
} from '@prisma/query-plan-executor'
import { appendFileSync } from 'node:fs'
import { parseArgs } from '../common/args.mjs'

// REQUEST_LOG=<file>: one JSON line per request on arrival (the tests' independent count).
function logged(fetch) {
  const file = process.env.REQUEST_LOG
  if (!file) return fetch
  return (req, ...rest) => {
    const url = new URL(req.url)
    appendFileSync(file, JSON.stringify({ method: req.method, path: url.pathname + url.search }) + '\n')
    return fetch(req, ...rest)
  }
}

const args = parseArgs(process.argv.slice(2))
const port = Number(args.port ?? process.env.PORT ?? 0)
const databaseUrl = args['database-url'] ?? process.env.DATABASE_URL
if (!databaseUrl) {
  console.error('qpe-server: a database URL is required (--database-url or DATABASE_URL)')
  process.exit(2)
}

// Gotcha: without a global context manager every route answers 500 "No active logger found".
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())

const logger = createConsoleLogger('text', process.env.LOG_LEVEL ?? 'off')

await withActiveLogger(logger, async () => {
  const server = await Server.create({
    databaseUrl,
    queryTimeout: parseDuration(process.env.QUERY_TIMEOUT ?? 'PT5M'),
    maxTransactionTimeout: parseDuration('PT5M'),
    maxTransactionWaitTime: parseDuration('PT5M'),
    maxResponseSize: parseSize('128 MiB'),
  })
  const http = serve({ fetch: logged(server.fetch), port, hostname: '127.0.0.1' }, (info) => {
    console.log(JSON.stringify({ ready: true, port: info.port, kind: 'qpe', version }))
  })
  const stop = async () => {
    http.close()
    await server.shutdown().catch(() => {})
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
})
