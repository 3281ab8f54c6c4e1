/**
 * The library as it ships: the build in `dist/` (tsup's output), not `src/` through tsx.
 *
 * Why not import `src/`: tsx compiles TypeScript with esbuild's `keepNames`, which wraps every
 * function and closure it creates in a `__name(fn, 'name')` call (an `Object.defineProperty`). The
 * statement path creates a few closures per statement, so through tsx it paid about 2 µs per statement
 * (V8 profile, PostgreSQL point SELECT) that the published package does not: the overhead benchmark
 * measured the compiler, not the library. `npm run bench` builds first; run directly, this module
 * refuses a missing or stale build instead of measuring old code.
 */
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

type Library = typeof import('../src/index.js')

const root = fileURLToPath(new URL('..', import.meta.url))
const entry = join(root, 'dist', 'index.js')

function newestSource(directory: string): number {
  let newest = 0
  for (const item of readdirSync(directory, { withFileTypes: true })) {
    const path = join(directory, item.name)
    newest = Math.max(newest, item.isDirectory() ? newestSource(path) : statSync(path).mtimeMs)
  }
  return newest
}

if (!existsSync(entry) || statSync(entry).mtimeMs < newestSource(join(root, 'src'))) {
  throw new Error(
    `bench: ${entry} is missing or older than src/; run \`npm run build\` first (npm run bench does)`,
  )
}

/** The built package's exports, typed as `src/index.ts` declares them. */
export const shipped = (await import(entry)) as Library
