// The recorded workload A1..A15 (shared/reference/recorded/README.md, corpus A), written once
// against the Prisma Client API so that the 7.2 client and both 6.19 clients run the same calls.
//
// Every step prints one JSON line on stdout:
//   {"n", "step", "outcome": "ok"|"error", "code", "result", "summary", ["message"], ["outcomes"]}
// - n: 1, 2, … in execution order (steps that do not run on a stack are skipped, as recorded);
// - step: the recorded step name;
// - code: the Prisma error code (or "ROLLBACK" for A10's deliberate abort), null when ok;
// - result: the full, normalised result (deterministic on a fresh database);
// - summary: the result summarised like the recorded *.steps.jsonl (`{"rows": n}` for arrays,
//   `{"json_len": n}` for objects whose compact JSON is longer than 200 characters);
// - outcomes: for parallel steps, {"ok": k, "<code>": m, …}.
// A last line {"done": true, "steps": N} marks a complete run.

const VOLATILE_KEYS = new Set(['createdAt', 'updatedAt'])

/** JSON-safe, deterministic copy: BigInt/Decimal -> string, Date -> ISO, volatile keys dropped. */
export function normalize(value) {
  return JSON.parse(
    JSON.stringify(value ?? null, function (key, v) {
      if (VOLATILE_KEYS.has(key)) return undefined
      if (typeof v === 'bigint') return v.toString()
      return v
    }),
  )
}

export function summarize(value) {
  if (Array.isArray(value)) return { rows: value.length }
  if (value && typeof value === 'object') {
    const len = JSON.stringify(value).length
    if (len > 200) return { json_len: len }
  }
  return value
}

function compactMessage(err) {
  return String(err?.message ?? err)
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' | ')
}

function errorCode(err) {
  if (err?.message === ROLLBACK_MESSAGE) return 'ROLLBACK'
  return err?.code ?? err?.errorCode ?? err?.name ?? 'UNKNOWN'
}

const ROLLBACK_MESSAGE = 'workload: abort on purpose'

// A client that cannot reach its server may wait forever (the 6.19 binary-engine client polls
// /status without end): a step that takes longer than STEP_TIMEOUT_MS (default 30 s) is reported
// with code "TIMEOUT" and the process exits with status 3.
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS ?? 30_000)

function withTimeout(promise, emitTimeout) {
  let timer
  const timeout = new Promise(() => {
    timer = setTimeout(() => {
      emitTimeout()
      process.exit(3)
    }, STEP_TIMEOUT_MS)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export function makeEmitter(write = (line) => process.stdout.write(JSON.stringify(line) + '\n')) {
  let n = 0
  const lines = []
  const emit = (line) => {
    lines.push(line)
    write(line)
  }

  /** Runs one step; returns its (raw) result or undefined on error. */
  async function step(name, fn) {
    const line = { n: ++n, step: name }
    const timedOut = () =>
      emit({ ...line, outcome: 'error', code: 'TIMEOUT', result: null, summary: null, message: `no answer in ${STEP_TIMEOUT_MS} ms` })
    try {
      const value = await withTimeout(Promise.resolve().then(fn), timedOut)
      const result = normalize(value)
      emit({ ...line, outcome: 'ok', code: null, result, summary: summarize(result) })
      return value
    } catch (err) {
      emit({ ...line, outcome: 'error', code: errorCode(err), result: null, summary: null, message: compactMessage(err) })
      return undefined
    }
  }

  /** Runs the thunks concurrently (started in the same tick); one line for all of them. */
  async function parallel(name, thunks) {
    const line = { n: ++n, step: name, parallel: thunks.length }
    const timedOut = () =>
      emit({ ...line, outcome: 'error', code: 'TIMEOUT', result: null, summary: null, outcomes: { TIMEOUT: thunks.length } })
    const settled = await withTimeout(Promise.allSettled(thunks.map((t) => t())), timedOut)
    const outcomes = {}
    const result = settled.map((s) => {
      const key = s.status === 'fulfilled' ? 'ok' : errorCode(s.reason)
      outcomes[key] = (outcomes[key] ?? 0) + 1
      return s.status === 'fulfilled' ? { outcome: 'ok', result: normalize(s.value) } : { outcome: 'error', code: key }
    })
    const failed = settled.find((s) => s.status === 'rejected')
    emit({
      ...line,
      outcome: failed ? 'error' : 'ok',
      code: failed ? errorCode(failed.reason) : null,
      result,
      summary: null,
      outcomes,
    })
    return settled
  }

  const done = () => write({ done: true, steps: n })
  return { step, parallel, done, lines }
}

/**
 * The workload. `raw`: run A13/A13b ($queryRaw/$executeRaw; not on the 6.19 Wasm engine).
 */
export async function runWorkload(prisma, { raw = true, emitter = makeEmitter() } = {}) {
  const { step, parallel } = emitter
  const withPosts = { posts: true }

  const alice = await step('A1 create user with nested posts (Alice)', () =>
    prisma.user.create({
      data: { email: 'alice@example.test', name: 'Alice', posts: { create: [{ title: 'Alice post 1' }, { title: 'Alice post 2' }] } },
      include: withPosts,
    }),
  )
  const bob = await step('A1 create user with nested posts (Bob)', () =>
    prisma.user.create({
      data: {
        email: 'bob@example.test',
        name: 'Bob',
        posts: { create: [{ title: 'Bob post 1' }, { title: 'Bob post 2' }, { title: 'Bob post 3' }] },
      },
      include: withPosts,
    }),
  )
  const carol = await step('A1 create user with nested posts (Carol)', () =>
    prisma.user.create({
      data: {
        email: 'carol@example.test',
        name: 'Carol',
        posts: { create: [1, 2, 3, 4].map((i) => ({ title: `Carol post ${i}` })) },
      },
      include: withPosts,
    }),
  )
  const aliceId = alice?.id ?? 1
  const bobId = bob?.id ?? 2
  const carolId = carol?.id ?? 3

  await step('A2 findMany include+where+orderBy+take+skip', () =>
    prisma.user.findMany({
      where: { email: { endsWith: '@example.test' } },
      include: { posts: { orderBy: { id: 'desc' } } },
      orderBy: { id: 'desc' },
      take: 2,
      skip: 1,
    }),
  )
  await step('A2b findMany posts where relation filter', () =>
    prisma.post.findMany({
      where: { author: { name: { startsWith: 'C' } }, title: { contains: 'post' } },
      orderBy: { title: 'asc' },
      take: 10,
    }),
  )
  await step('A3 findUnique by email', () =>
    prisma.user.findUnique({ where: { email: 'bob@example.test' }, select: { id: true, name: true } }),
  )
  await step('A3b findUnique by id (miss -> null)', () => prisma.user.findUnique({ where: { id: 999999 } }))
  await step('A4 update user name', () => prisma.user.update({ where: { id: bobId }, data: { name: 'Robert' } }))
  const upsert = () =>
    prisma.user.upsert({
      where: { email: 'dave@example.test' },
      create: { email: 'dave@example.test', name: 'Dave' },
      update: { name: 'Dave (updated)' },
    })
  await step('A5 upsert (creates)', upsert)
  await step('A5b upsert (updates)', upsert)
  await step('A6 delete one post', () => prisma.post.delete({ where: { id: carol?.posts?.[0]?.id ?? 6 } }))
  await step('A7 count users', () => prisma.user.count())
  await step('A7b aggregate posts per author', () =>
    prisma.post.aggregate({
      where: { authorId: { in: [aliceId, bobId, carolId] } },
      _count: { _all: true },
      _min: { authorId: true },
      _max: { authorId: true },
    }),
  )
  await step('A8 batch $transaction([count, findMany, update])', () =>
    prisma.$transaction([
      prisma.user.count(),
      prisma.post.findMany({ where: { authorId: aliceId } }),
      prisma.post.update({ where: { id: alice?.posts?.[0]?.id ?? 1 }, data: { title: 'Alice post 1 (edited in batch)' } }),
    ]),
  )
  await step('A9 interactive transaction (commit)', () =>
    prisma.$transaction(async (tx) => {
      const erin = await tx.user.create({ data: { email: 'erin@example.test', name: 'Erin' } })
      await tx.post.create({ data: { title: 'Erin first post', authorId: erin.id } })
      return tx.post.count({ where: { authorId: erin.id } })
    }),
  )
  await step('A10 interactive transaction (rollback)', () =>
    prisma.$transaction(async (tx) => {
      await tx.user.create({ data: { email: 'frank@example.test', name: 'Frank' } })
      throw new Error(ROLLBACK_MESSAGE)
    }),
  )
  await step('A10b check rolled-back user is absent', () => prisma.user.findUnique({ where: { email: 'frank@example.test' } }))
  await step('A11 create duplicate email (P2002)', () =>
    prisma.user.create({ data: { email: 'alice@example.test', name: 'Alice again' } }),
  )
  await step('A12 update missing user (P2025)', () => prisma.user.update({ where: { id: 999999 }, data: { name: 'nobody' } }))
  if (raw) {
    await step('A13 $queryRaw', () =>
      prisma.$queryRaw`SELECT count(*)::int AS users FROM "User" WHERE email LIKE ${'%@example.test'}`,
    )
    await step('A13b $executeRaw', () => prisma.$executeRaw`UPDATE "User" SET name = ${'Carol R.'} WHERE id = ${carolId}`)
  }
  await parallel('A14 10 parallel requests', [
    () => prisma.user.findMany({ where: { name: { not: null } } }),
    () => prisma.post.findMany({ include: { author: true } }),
    () => prisma.user.count({ where: { posts: { some: {} } } }),
    () => prisma.post.count(),
    () => prisma.post.findMany({ where: { authorId: aliceId } }),
    () => prisma.post.findMany({ where: { authorId: bobId }, select: { title: true } }),
    () => prisma.user.findFirst({ where: { name: 'Robert' } }),
    () => prisma.post.aggregate({ _max: { id: true } }),
    () => prisma.user.findMany({ orderBy: { email: 'asc' }, take: 3 }),
    () => prisma.post.findFirst({ orderBy: { id: 'desc' } }),
  ])
  await parallel('A15 3 findUnique in one tick (client batches them)', [
    () => prisma.user.findUnique({ where: { email: 'alice@example.test' } }),
    () => prisma.user.findUnique({ where: { email: 'carol@example.test' } }),
    () => prisma.user.findUnique({ where: { email: 'nobody@example.test' } }),
  ])
  // Not in the recordings (they stop at A15): a wider burst, read-only so results stay fixed.
  await parallel(
    'P20 20 parallel requests',
    Array.from({ length: 20 }, (_, i) =>
      i % 2
        ? () => prisma.post.findMany({ where: { id: { gt: i } }, orderBy: { id: 'asc' }, take: 2 })
        : () => prisma.user.count({ where: { id: { gt: i } } }),
    ),
  )
  emitter.done()
  return emitter.lines
}

/** A short workload for the `prisma dev` demo server. */
export async function runDemoWorkload(prisma, { emitter = makeEmitter() } = {}) {
  const { step } = emitter
  const ada = await step('D1 create user with nested posts', () =>
    prisma.user.create({
      data: { email: 'ada@example.test', name: 'Ada', posts: { create: [{ title: 'Ada post 1' }, { title: 'Ada post 2' }] } },
      include: { posts: true },
    }),
  )
  await step('D2 findMany include', () => prisma.user.findMany({ include: { posts: { orderBy: { id: 'asc' } } } }))
  await step('D3 interactive transaction (commit)', () =>
    prisma.$transaction(async (tx) => {
      await tx.post.create({ data: { title: 'Ada post 3', authorId: ada?.id ?? 1 } })
      return tx.post.count()
    }),
  )
  await step('D3b interactive transaction (rolled back)', () =>
    prisma.$transaction(async (tx) => {
      await tx.user.create({ data: { email: 'temp@example.test', name: 'Temp' } })
      throw new Error(ROLLBACK_MESSAGE)
    }),
  )
  await step('D4 create duplicate email (P2002)', () => prisma.user.create({ data: { email: 'ada@example.test' } }))
  // Sequential on purpose: PGlite serves one connection at a time, so concurrent requests make the
  // executor's pool open a second connection that waits ~20 s for the first to be released.
  await step('D5 count users', () => prisma.user.count())
  await step('D6 aggregate posts', () => prisma.post.aggregate({ _count: { _all: true }, _max: { id: true } }))
  emitter.done()
  return emitter.lines
}
