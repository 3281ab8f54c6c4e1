import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { claimPort, getFreePort } from './ports.js'

const run = promisify(execFile)

// The suite runs its files in several worker processes that start servers at the same moment; a
// port handed to two of them made a replica fail with "Address already in use" in CI.
describe('getFreePort', () => {
  it('never hands the same port to two processes asking at once, and stays out of the ephemeral range', async () => {
    const script = `import { getFreePort } from ${JSON.stringify(join(import.meta.dirname, 'ports.ts'))}
      const ports = await Promise.all(Array.from({ length: 150 }, () => getFreePort()))
      console.log(JSON.stringify(ports))`
    const other = run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: join(import.meta.dirname, '../..'),
    })
    const mine = await Promise.all(Array.from({ length: 150 }, () => getFreePort()))
    const theirs = JSON.parse((await other).stdout) as number[]

    expect(new Set(mine).size).toBe(150)
    expect(new Set(theirs).size).toBe(150)
    expect(mine.filter((port) => theirs.includes(port))).toEqual([])
    const [ephemeralLow] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)
    expect(Math.max(...mine, ...theirs)).toBeLessThan(Number(ephemeralLow))
    // Each port is claimed by a lock file naming the process that holds it.
    expect(readFileSync(join(tmpdir(), 'kysely-resilient-test-ports', String(mine[0])), 'utf8')).toBe(
      String(process.pid),
    )
  }, 30_000)

  it('takes a lock over from a process that is gone, never from one that lives', async () => {
    const port = await getFreePort()
    const lock = join(tmpdir(), 'kysely-resilient-test-ports', String(port))
    writeFileSync(lock, String(process.ppid))
    expect(claimPort(port)).toBe(false)
    expect(readFileSync(lock, 'utf8')).toBe(String(process.ppid))

    const gone = spawn('true')
    await once(gone, 'exit')
    writeFileSync(lock, String(gone.pid))
    expect(claimPort(port)).toBe(true)
    expect(readFileSync(lock, 'utf8')).toBe(String(process.pid))
  })
})
