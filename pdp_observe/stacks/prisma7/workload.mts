// Recorded workload A1..A15 with Prisma Client 7.2.0 (generator `prisma-client`) over accelerateUrl.
//
//   npx tsx workload.mts prisma+postgres://127.0.0.1:PORT/?api_key=test [--demo]
//
// A bare PORT (127.0.0.1:PORT) or an http://host:port URL is accepted too (turned into
// prisma+postgres://host:port/?api_key=$API_KEY, default test).
// --demo runs the short demo workload instead (for the `prisma dev` demo server).
import { PrismaClient } from './generated/client.ts'
import { runDemoWorkload, runWorkload } from '../common/workload.mjs'

const argv = process.argv.slice(2)
const rawTarget = argv.find((a) => !a.startsWith('--'))
// A bare port means 127.0.0.1:PORT.
const target = rawTarget && /^\d+$/.test(rawTarget) ? `http://127.0.0.1:${rawTarget}` : rawTarget
if (!target) {
  console.error('usage: tsx workload.mts <prisma+postgres://127.0.0.1:PORT/?api_key=KEY> [--demo]')
  process.exit(2)
}
const accelerateUrl = /^https?:\/\//.test(target)
  ? `prisma+postgres://${new URL(target).host}/?api_key=${process.env.API_KEY ?? 'test'}`
  : target

const prisma = new PrismaClient({ accelerateUrl })
try {
  if (argv.includes('--demo')) await runDemoWorkload(prisma)
  else await runWorkload(prisma, { raw: true })
} finally {
  await prisma.$disconnect()
}
