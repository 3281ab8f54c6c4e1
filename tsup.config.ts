import { defineConfig } from 'tsup'

export default defineConfig({
  entry: { index: 'src/index.ts', 'lambda/index': 'src/lambda/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node22',
  platform: 'node',
  // Shared chunks, so the root and `kysely-resilient/lambda` share one copy of every class
  // (`instanceof ConfigError` holds whichever entry point threw it).
  splitting: true,
  treeshake: true,
  // Drivers and kysely are peers: never bundle them, so a consumer has one shared copy of each.
  external: ['kysely', 'pg', 'pg-cursor', 'mysql2', '@aws-sdk/rds-signer', '@opentelemetry/api'],
})
