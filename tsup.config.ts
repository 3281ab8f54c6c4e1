import { defineConfig } from 'tsup'

export default defineConfig({
  entry: { index: 'src/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node22',
  platform: 'node',
  splitting: false,
  treeshake: true,
  // Drivers and kysely are peers: never bundle them, so a consumer has one shared copy of each.
  external: ['kysely', 'pg', 'pg-cursor', 'mysql2', '@aws-sdk/rds-signer'],
})
