import type { TestProject } from 'vitest/node'
import { type ProvidedClusters, provisionClusters } from './clusters.js'

/**
 * Vitest global setup: one writer/reader pair per engine for the whole run (see clusters.ts for where
 * they come from), handed to test files through `inject('clusters')`. Tests that break servers start
 * their own clusters instead.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const startedAt = performance.now()
  const running = await provisionClusters()
  const clusters: ProvidedClusters = Object.fromEntries(running.map(({ info }) => [info.engine, info]))
  project.provide('clusters', clusters)
  const summary = running.map(({ info }) => `${info.engine}${info.external ? ' (external)' : ''}`).join(', ')
  console.log(
    `[global-setup] clusters ready in ${Math.round(performance.now() - startedAt)} ms: ${summary || 'none'}`,
  )
  return async () => {
    await Promise.allSettled(running.map((cluster) => cluster.stop()))
  }
}
