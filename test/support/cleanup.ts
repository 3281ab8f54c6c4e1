import { spawn } from 'node:child_process'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * Registry of everything this Node process started (servers, one-shot commands such as initdb, temp
 * dirs), torn down on exit, SIGINT, SIGTERM and SIGHUP. Normal teardown (cluster.stop()) unregisters
 * things as it goes, so this only matters when a test run crashes or is interrupted.
 *
 * `exit` handlers cannot run after SIGKILL (OOM killer, a killed Vitest process), so a detached shell
 * "watchdog" polls this process's pid and, once it is gone, runs a script doing the same teardown for
 * whatever is still registered.
 *
 * Order matters: signal servers, wait (bounded) for them and for running commands to finish, SIGKILL
 * stragglers, and only then delete directories. Deleting a data directory under a running initdb made its
 * bootstrap backend die without removing its SysV shared-memory segment, which then outlived the run.
 */

interface TrackedProcess {
  readonly pid: number
  /**
   * server: sent `signal` (e.g. SIGQUIT, PostgreSQL's immediate shutdown) at cleanup.
   * command: left to finish (initdb and friends take about a second); pid is its process group.
   */
  readonly kind: 'server' | 'command'
  readonly signal: NodeJS.Signals
}

const GRACE_MS = 5_000
const processes = new Set<TrackedProcess>()
const directories = new Set<string>()
let installed = false
let watchdog: { readonly pid: number | undefined; readonly stateFile: string } | undefined

/** A long-running server; at cleanup it gets `signal`, then SIGKILL if still alive after a grace period. */
export function trackServer(pid: number, signal: NodeJS.Signals): () => void {
  return track({ pid, kind: 'server', signal })
}

/** A one-shot command leading its own process group; at cleanup it may finish, then its group is killed. */
export function trackCommand(pid: number): () => void {
  return track({ pid, kind: 'command', signal: 'SIGKILL' })
}

/** A file or directory, removed at cleanup once the processes are stopped. */
export function trackDirectory(path: string): () => void {
  directories.add(path)
  changed()
  return () => {
    directories.delete(path)
    changed()
  }
}

function track(entry: TrackedProcess): () => void {
  processes.add(entry)
  changed()
  return () => {
    processes.delete(entry)
    changed()
  }
}

/** Synchronously stops everything registered and removes registered directories. */
export function cleanupEverything(): void {
  const tracked = [...processes]
  for (const { pid, kind, signal } of tracked) {
    if (kind !== 'server') continue
    sendSignal(pid, signal)
    // A server frozen with SIGSTOP (hung-server tests) only acts on e.g. SIGQUIT once it runs again.
    sendSignal(pid, 'SIGCONT')
  }
  const deadline = Date.now() + GRACE_MS
  while (tracked.some(({ pid }) => isAlive(pid)) && Date.now() < deadline) sleepSync(20)
  for (const { pid, kind } of tracked) {
    if (isAlive(pid)) sendSignal(kind === 'command' ? -pid : pid, 'SIGKILL')
  }
  processes.clear()
  for (const dir of directories) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 })
    } catch {
      // Best effort: we are probably exiting.
    }
  }
  directories.clear()
  changed()
}

function sendSignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {
    // Already gone.
  }
}

/**
 * Whether a process still runs. In a synchronous exit handler Node cannot reap its exited children, so
 * they linger as zombies, which `kill(pid, 0)` still reports; on Linux, /proc tells the difference.
 */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    try {
      process.kill(pid, 0)
      return process.platform !== 'linux'
    } catch {
      return false
    }
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

function changed(): void {
  if (!installed && (processes.size > 0 || directories.size > 0)) install()
  if (watchdog !== undefined) writeFileSync(watchdog.stateFile, watchdogScript())
}

function install(): void {
  installed = true
  process.once('exit', onExit)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal)
  startWatchdog()
}

function onExit(): void {
  cleanupEverything()
  stopWatchdog()
}

function onSignal(signal: NodeJS.Signals): void {
  cleanupEverything()
  stopWatchdog()
  for (const name of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(name, onSignal)
  // Adding a listener disables Node's default "terminate on signal". If nobody else (e.g. Vitest) handles
  // this signal, re-raise it so the process still dies the way the sender intended.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
}

function stopWatchdog(): void {
  if (watchdog === undefined) return
  if (watchdog.pid !== undefined) sendSignal(watchdog.pid, 'SIGKILL')
  rmSync(watchdog.stateFile, { force: true })
  watchdog = undefined
}

function startWatchdog(): void {
  const stateFile = join(tmpdir(), `kr-watchdog-${process.pid}.sh`)
  writeFileSync(stateFile, '')
  const loop = 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; sh "$2"; rm -f "$2"'
  const child = spawn('sh', ['-c', loop, 'kr-watchdog', String(process.pid), stateFile], {
    detached: true,
    stdio: 'ignore',
  })
  child.on('error', () => {
    // No `sh`? Then we rely on the exit handlers alone.
  })
  child.unref()
  watchdog = { pid: child.pid, stateFile }
}

/** The same teardown as cleanupEverything(), as a shell script for the watchdog. */
function watchdogScript(): string {
  const tracked = [...processes]
  const lines = [
    // Zombie-aware liveness, as in isAlive(); without /proc fall back to kill -0.
    `alive() { if [ -r /proc/$1/stat ]; then [ "$(sed 's/.*) //' /proc/$1/stat | cut -c1)" != Z ]; else kill -0 "$1" 2>/dev/null; fi; }`,
  ]
  for (const { pid, kind, signal } of tracked) {
    if (kind === 'server') {
      lines.push(`kill -${signal.replace(/^SIG/, '')} ${pid} 2>/dev/null; kill -CONT ${pid} 2>/dev/null`)
    }
  }
  if (tracked.length > 0) {
    const anyAlive = tracked.map(({ pid }) => `alive ${pid}`).join(' || ')
    lines.push(`i=0; while [ $i -lt ${GRACE_MS / 100} ] && { ${anyAlive}; }; do sleep 0.1; i=$((i+1)); done`)
    for (const { pid, kind } of tracked) {
      lines.push(`kill -KILL ${kind === 'command' ? `-- -${pid}` : pid} 2>/dev/null`)
    }
  }
  for (const dir of directories) lines.push(`rm -rf -- ${shellQuote(dir)}`)
  return `${lines.join('\n')}\n`
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`
}
