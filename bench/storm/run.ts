/**
 * Connection storm: far more clients than max_connections hit a server, through `createDb` and through
 * plain Kysely, one after the other on the same throwaway server, for PostgreSQL and MariaDB (and, on
 * PostgreSQL, the same storm through PgBouncer). Prints requests ok and failed (by error code), TCP
 * connects, latency and createDb's retries side by side. See bench/README.md.
 *
 *   npm run bench:storm
 *   BENCH_STORM_ENGINES=postgres BENCH_STORM_SCENARIOS=single BENCH_STORM_SECONDS=5 npm run bench:storm
 *   BENCH_STORM_ENGINES=postgres BENCH_STORM_SCENARIOS=storm,proxy npm run bench:storm
 */
import { availableParallelism, loadavg } from 'node:os'
import { PGBOUNCER_AVAILABLE } from '../../test/support/pgbouncer.js'
import type { Engine } from '../../test/support/sql.js'
import { killWorkers, runFleet } from './fleet.js'
import type { WorkerResult } from './protocol.js'
import { describeObservation, type ProxyObservation, type ProxyRun, startProxy } from './proxy.js'
import { type Measurement, report } from './report.js'
import {
  createSchema,
  HeldConnections,
  probeFreeSlots,
  resetServerState,
  type StormServer,
  serverConnectionAttempts,
  startServer,
  waitForConnections,
} from './servers.js'
import {
  ENGINE_NAME,
  ENGINES,
  FREE_SLOTS,
  LOOPS,
  MAX_CONNECTIONS,
  PGBOUNCER,
  POOL_MAX,
  processesOf,
  ROWS,
  SCENARIO_LABEL,
  SCENARIOS,
  SECONDS,
  scenarioRunsOn,
  VARIANTS,
} from './settings.js'

/** What an interrupted run must tear down. */
interface Resources {
  server: StormServer | undefined
  held: HeldConnections | undefined
  proxy: ProxyRun | undefined
}

async function release(resources: Resources): Promise<void> {
  const { server, held, proxy } = resources
  resources.server = undefined
  resources.held = undefined
  resources.proxy = undefined
  killWorkers()
  await held?.close().catch(() => undefined)
  await proxy?.pgbouncer.stop().catch(() => undefined)
  await server?.stop().catch(() => undefined)
}

async function main(): Promise<void> {
  const startedAt = performance.now()
  const resources: Resources = { server: undefined, held: undefined, proxy: undefined }
  // Ctrl-C: kill the workers, close the held connections, stop the server, exit. The test harness also
  // kills every server it started on SIGINT by itself.
  let aborting = false
  const abort = (why: string, code: number) => {
    if (aborting) return
    aborting = true
    console.error(`\n${why}: cleaning up`)
    setTimeout(() => process.exit(code), 10_000).unref()
    void release(resources).finally(() => process.exit(code))
  }
  process.on('SIGINT', () => abort('interrupted', 130))
  process.on('SIGTERM', () => abort('terminated', 143))

  console.log('kysely-resilient: connection storm, createDb vs plain Kysely')
  console.log(
    `node ${process.version}, ${availableParallelism()} CPUs, load average ${loadAverage()}; ` +
      `${SECONDS} s per measurement, ${LOOPS} loops per process (point SELECT and one-row INSERT alternating), ` +
      `pool max ${POOL_MAX} per process; variants in the order ${VARIANTS.join(', ')}\n`,
  )

  const measurements: Measurement[] = []
  let setupFailed = false
  for (const engine of ENGINES) {
    try {
      await measureEngine(engine, resources, measurements)
    } catch (error) {
      setupFailed = true
      console.log(`\n${ENGINE_NAME[engine]}: set-up failed: ${describe(error)}`)
    } finally {
      await release(resources)
    }
  }

  console.log('')
  report(measurements)
  console.log(
    `\ntotal time ${((performance.now() - startedAt) / 1000).toFixed(0)} s; load average now ${loadAverage()}`,
  )
  // A measurement, not a test: only a set-up failure (a server or a worker that would not start) is an error.
  if (setupFailed) process.exitCode = 1
}

async function measureEngine(
  engine: Engine,
  resources: Resources,
  measurements: Measurement[],
): Promise<void> {
  const server = await startServer(engine, MAX_CONNECTIONS[engine])
  resources.server = server
  await createSchema(server, ROWS)
  console.log(`${server.description}: ${server.appSlots} connections for the app user`)

  for (const scenario of SCENARIOS) {
    if (!scenarioRunsOn(scenario, engine)) {
      console.log(`  ${SCENARIO_LABEL[scenario]}: skipped, PgBouncer speaks only PostgreSQL's protocol`)
      continue
    }
    if (scenario === 'proxy') {
      if (!PGBOUNCER_AVAILABLE) {
        console.log(
          `  ${SCENARIO_LABEL[scenario]}: SKIPPED, PgBouncer not found (apt-get install -y pgbouncer, or set PGBOUNCER_BIN)`,
        )
        continue
      }
      console.log(
        `  ${SCENARIO_LABEL[scenario]}: a fresh PgBouncer per variant, pool_mode ${PGBOUNCER.poolMode}, ` +
          `max_client_conn ${PGBOUNCER.maxClientConn}, default_pool_size ${PGBOUNCER.defaultPoolSize}, ` +
          `query_wait_timeout ${PGBOUNCER.queryWaitTimeoutS} s; createDb with proxy: 'pgbouncer'`,
      )
    }
    const held = new HeldConnections(server)
    resources.held = held
    if (scenario === 'single')
      console.log(`  ${SCENARIO_LABEL[scenario]}: ${await leaveFreeSlots(server, held)}`)
    for (const variant of VARIANTS) {
      // The server as the previous measurement left it, minus its connections.
      await resetServerState(server)
      const lingering = (await waitForConnections(server, held.count)) - held.count
      const processes = processesOf(scenario)
      // The proxy scenario: a PgBouncer of its own for each variant, so both start with no server connection.
      const proxy = scenario === 'proxy' ? await startProxy(server) : undefined
      resources.proxy = proxy
      const attemptsBefore = await serverConnectionAttempts(server)
      process.stdout.write(`  ${SCENARIO_LABEL[scenario]}, ${variant}: ${processes} x ${LOOPS} loops ... `)
      proxy?.startSampling()
      const outcome = await runFleet(
        {
          engine,
          variant,
          url: proxy?.pgbouncer.url ?? server.appUrl,
          proxy: proxy === undefined ? undefined : 'pgbouncer',
          poolMax: POOL_MAX,
          loops: LOOPS,
          durationMs: SECONDS * 1000,
          rows: ROWS,
        },
        processes,
      )
      let proxyObservation: ProxyObservation | undefined
      if (proxy !== undefined) {
        proxyObservation = await proxy.finish().catch(() => undefined)
        // PgBouncer's server connections close with it; the count below includes its logins.
        resources.proxy = undefined
        await proxy.pgbouncer.stop()
      }
      const attemptsAfter = await serverConnectionAttempts(server)
      // MariaDB's count includes the monitoring connection that read it afterwards; a log file read is none.
      const serverConnects =
        attemptsBefore === undefined || attemptsAfter === undefined
          ? undefined
          : attemptsAfter - attemptsBefore - (engine === 'mysql' ? 1 : 0)
      const sum = (pick: (result: WorkerResult) => number) =>
        outcome.results.reduce((total, result) => total + pick(result), 0)
      console.log(
        `${(outcome.wallMs / 1000).toFixed(1)} s, ${sum((r) => r.ok)} ok, ${sum((r) => r.failed)} failed` +
          (outcome.problems.length > 0 ? `, ${outcome.problems.length} process(es) failed` : ''),
      )
      if (proxyObservation !== undefined) console.log(`    ${describeObservation(proxyObservation)}`)
      measurements.push({
        engine,
        scenario,
        variant,
        processes,
        outcome,
        lingering,
        serverConnects,
        proxy: proxyObservation === undefined ? undefined : describeObservation(proxyObservation),
      })
    }
    await held.close()
    resources.held = undefined
  }
  const left = await waitForConnections(server, 0)
  if (left !== 0) console.log(`  (${left} connections still open at the end)`)
  resources.server = undefined
  await server.stop()
}

/**
 * Holds app-user connections from this process until exactly FREE_SLOTS remain for the app user, and
 * checks that by opening connections until the server refuses one. The count starts from the
 * documented reservations (appSlots); the probe corrects it if the server disagrees.
 */
async function leaveFreeSlots(server: StormServer, held: HeldConnections): Promise<string> {
  await held.open(server.appSlots - FREE_SLOTS)
  let probe: Awaited<ReturnType<typeof probeFreeSlots>> | undefined
  for (let attempt = 0; attempt < 4; attempt++) {
    await waitForConnections(server, held.count)
    // The monitoring connection of the wait above must be gone before probing (MariaDB counts it).
    await sleep(300)
    probe = await probeFreeSlots(server, FREE_SLOTS + 3)
    await waitForConnections(server, held.count)
    if (probe.free === FREE_SLOTS) break
    if (probe.free > FREE_SLOTS) await held.open(probe.free - FREE_SLOTS)
    else await held.close(FREE_SLOTS - probe.free)
  }
  const verdict =
    probe?.free === FREE_SLOTS
      ? `checked: ${probe.free} more app connections opened, the next refused with ${probe.refusedWith ?? '?'}`
      : `WARNING: could not leave exactly ${FREE_SLOTS} slots (last probe opened ${probe?.free})`
  return `holding ${held.count} app connections (${server.appSlots} - ${FREE_SLOTS}); ${verdict}`
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function describe(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error)
}

function loadAverage(): string {
  return loadavg()
    .map((value) => value.toFixed(2))
    .join(' ')
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
