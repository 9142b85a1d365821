// Recorded workload A1..A15 (without the raw steps A13/A13b, which the 6.19 Wasm engine lacks)
// with Prisma Client 6.19.0, either client kind:
//
//   node workload.mjs binary    http://127.0.0.1:PORT                      (engineType "binary", running engine)
//   node workload.mjs dataproxy prisma+postgres://127.0.0.1:PORT/?api_key=test   (Data Proxy client)
//
// A bare PORT means 127.0.0.1:PORT; for `dataproxy` an http://host:port URL is turned into
// prisma+postgres://host:port/?api_key=$API_KEY (default test).
import { createRequire } from 'node:module'
import { runWorkload } from '../common/workload.mjs'

const require = createRequire(import.meta.url)
const [kind, rawTarget] = process.argv.slice(2)
// A bare port means 127.0.0.1:PORT.
const target = /^\d+$/.test(rawTarget ?? '') ? `http://127.0.0.1:${rawTarget}` : rawTarget
if (!['binary', 'dataproxy'].includes(kind) || !target) {
  console.error('usage: node workload.mjs binary|dataproxy <url>')
  process.exit(2)
}

let prisma
if (kind === 'binary') {
  // The datasource URL is not used when the client talks to a running engine, but must resolve.
  process.env.DATABASE_URL ??= 'postgresql://unused@127.0.0.1:1/unused'
  const { PrismaClient } = require('./binary/generated/index.js')
  prisma = new PrismaClient({ __internal: { engine: { endpoint: target } } })
} else {
  const url = /^https?:\/\//.test(target)
    ? `prisma+postgres://${new URL(target).host}/?api_key=${process.env.API_KEY ?? 'test'}`
    : target
  const { PrismaClient } = require('./dataproxy/generated/index.js')
  prisma = new PrismaClient({ datasourceUrl: url })
}

try {
  await runWorkload(prisma, { raw: false })
} finally {
  await prisma.$disconnect()
}
