// Demo server: `prisma dev` (@prisma/dev 0.20.0, startPrismaDevServer) — the same query-plan
// executor over an embedded PGlite database, so no PostgreSQL is needed. Creates the User/Post
// tables with plain SQL (there is no schema engine offline).
//
//   node demo-server.mjs [--port N]
//
// Ready line on stdout: {"ready":true,"port":N,"kind":"demo","url":"prisma+postgres://localhost:N/?api_key=…",…}
// The api_key is @prisma/dev's own (base64url JSON, checked by its middleware): use `url` as is.
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { context } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import pg from 'pg'
import { parseArgs } from '../common/args.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const args = parseArgs(process.argv.slice(2))

// @prisma/dev serves HTTP without a hostname (all interfaces); keep every listener on loopback.
const originalListen = net.Server.prototype.listen
net.Server.prototype.listen = function (...a) {
  if (typeof a[0] === 'number' || (typeof a[0] === 'string' && /^\d+$/.test(a[0]))) {
    if (a.length === 1 || typeof a[1] === 'function' || a[1] === undefined) a.splice(1, a[1] === undefined ? 1 : 0, '127.0.0.1')
  } else if (a[0] && typeof a[0] === 'object' && !a[0].path && !a[0].host) {
    a[0] = { ...a[0], host: '127.0.0.1' }
  }
  return originalListen.apply(this, a)
}

// Same gotcha as the stock executor: a global OpenTelemetry context manager must be registered.
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

const { startPrismaDevServer } = await import('@prisma/dev')
const port = Number(args.port ?? process.env.PORT ?? 0) || (await freePort())
const server = await startPrismaDevServer({
  name: `pdp-demo-${process.pid}`,
  port,
  databasePort: await freePort(),
  shadowDatabasePort: await freePort(),
  persistenceMode: 'stateless',
})

// Create the tables through the PGlite socket (one connection at a time: close it afterwards).
const db = new pg.Client({ connectionString: server.database.connectionString })
await db.connect()
await db.query(fs.readFileSync(path.join(HERE, '..', 'schema', 'schema.sql'), 'utf8'))
await db.end()

console.log(
  JSON.stringify({
    ready: true,
    port: server.port ?? port,
    kind: 'demo',
    url: server.ppg.url,
    http_url: server.http.url,
    database_url: server.database.connectionString,
  }),
)

const stop = async () => {
  await server.close().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
