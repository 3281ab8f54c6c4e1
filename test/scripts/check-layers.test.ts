import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, test } from 'vitest'
import { checkLayers, describeReport } from '../../scripts/check-layers.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const SCRIPT = path.join(ROOT, 'scripts/check-layers.ts')
const CYCLE = path.join(ROOT, 'test/scripts/fixtures/folder-cycle')

/** Runs the check the way `npm test` does, as a command, and returns its exit code and output. */
function runCheck(root: string): { status: number | null; output: string } {
  const tsx = createRequire(import.meta.url).resolve('tsx/cli')
  const run = spawnSync(process.execPath, [tsx, SCRIPT, root], { cwd: ROOT, encoding: 'utf8' })
  return { status: run.status, output: `${run.stdout}${run.stderr}` }
}

describe('scripts/check-layers.ts', () => {
  test('finds two folders that import each other, by a type-only import and a re-export', () => {
    const report = checkLayers(CYCLE)
    expect(report.tangles).toEqual([{ members: ['alpha', 'beta'], cycles: [['alpha', 'beta', 'alpha']] }])
    // Imports in comments and strings are not imports: base/ stays out of the cycle.
    expect([...(report.graph.get('base')?.keys() ?? [])]).toEqual([])
    expect([...(report.graph.get('entry.ts')?.keys() ?? [])]).toEqual(['alpha'])
  })

  test('fails as a command on that cycle, naming it and the imports behind it', () => {
    const { status, output } = runCheck(CYCLE)
    expect(status).toBe(1)
    expect(output).toContain('alpha → beta → alpha')
    expect(output).toContain('alpha/alpha-type.ts imports beta/beta-type.ts')
    expect(output).toContain('beta/beta-type.ts imports alpha/alpha-type.ts')
  })

  test('fails on a root without source files instead of passing on nothing', () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'check-layers-'))
    try {
      expect(describeReport(empty, checkLayers(empty)).exitCode).toBe(1)
    } finally {
      rmSync(empty, { recursive: true, force: true })
    }
  })
})
