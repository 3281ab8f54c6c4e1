// Bundles handler.ts for AWS Lambda once per engine and shows that the unused driver is not inside.
//   npm run example:lambda:bundle                            (writes to a temporary directory)
//   npm run example:lambda:bundle -- out/                    (out/postgres/index.mjs, out/mysql/index.mjs)
//   npm run example:lambda:bundle -- out/ --bundle-aws-sdk   (the AWS SDK inside the bundle too)
//
// The library loads its driver with a dynamic `import('pg')` / `import('mysql2')`, chosen at run time
// by DB_DIALECT. A bundler cannot know which one runs, so by default esbuild bundles BOTH. Mark the
// driver you do not use as external: the import of it stays in the code but never executes, and the
// driver is neither bundled nor needed in the deployment package.
//
// The same goes for the AWS SDK: DB_AUTH=iam loads `@aws-sdk/rds-signer` and DB_AUTH=secret
// `@aws-sdk/client-secrets-manager`, both with a dynamic import. Bundled, they and their credential
// providers add about 460 KiB. The Lambda Node.js runtimes ship the AWS SDK for JavaScript v3, so
// `@aws-sdk/*` is external by default here; --bundle-aws-sdk (or `awsSdk: 'bundled'`) puts it inside,
// for a runtime whose SDK lacks a package or is older than you need.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build, type Metafile } from 'esbuild'

export type Engine = 'postgres' | 'mysql'

/** The drivers of each engine; the other engine's are external. */
const DRIVERS: Readonly<Record<Engine, readonly string[]>> = {
  postgres: ['pg', 'pg-cursor'],
  mysql: ['mysql2'],
}

export interface BundleOptions {
  /**
   * `'external'`: no `@aws-sdk/*` package in the bundle; `DB_AUTH=iam` or `secret` loads it from the
   * Lambda runtime's own AWS SDK (with `password` auth it is never loaded). `'bundled'`: the SDK
   * packages the library imports are inside, with everything they need.
   *
   * Default: `'external'`.
   */
  readonly awsSdk?: 'external' | 'bundled'
}

/** The packages of the AWS SDK for JavaScript v3 and its Smithy runtime. */
export function isAwsSdkPackage(name: string): boolean {
  return name.startsWith('@aws-sdk/') || name.startsWith('@smithy/') || name.startsWith('@aws/')
}

export interface BundleReport {
  readonly engine: Engine
  readonly outfile: string
  readonly bytes: number
  /** Packages (`node_modules/<name>`) with at least one input in the bundle, biggest first. */
  readonly packages: ReadonlyArray<{ readonly name: string; readonly bytes: number }>
  readonly topInputs: ReadonlyArray<{ readonly path: string; readonly bytes: number }>
}

const here = fileURLToPath(new URL('.', import.meta.url))

export async function bundle(
  engine: Engine,
  outdir: string,
  options: BundleOptions = {},
): Promise<BundleReport> {
  const other: Engine = engine === 'postgres' ? 'mysql' : 'postgres'
  const awsSdk = options.awsSdk ?? 'external'
  const outfile = join(outdir, engine, 'index.mjs')
  const result = await build({
    entryPoints: [join(here, 'handler.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'esm',
    minify: true,
    metafile: true,
    logLevel: 'warning',
    // pg's optional native binding: only loaded when you ask for it (`pg.native`). The AWS SDK: the
    // Lambda runtime provides it (see BundleOptions).
    external: [...DRIVERS[other], 'pg-native', ...(awsSdk === 'external' ? ['@aws-sdk/*'] : [])],
    // The drivers are CommonJS and call require('net') etc.; give the ESM bundle a real `require`.
    banner: {
      js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
    },
  })
  return report(engine, outfile, result.metafile)
}

function report(engine: Engine, outfile: string, metafile: Metafile): BundleReport {
  const output = Object.values(metafile.outputs)[0]
  if (output === undefined) throw new Error('esbuild produced no output')
  const inputs = Object.entries(output.inputs).map(([path, input]) => ({ path, bytes: input.bytesInOutput }))
  const packages = new Map<string, number>()
  for (const { path, bytes } of inputs) {
    const name = packageOf(path)
    if (name !== undefined) packages.set(name, (packages.get(name) ?? 0) + bytes)
  }
  return {
    engine,
    outfile,
    bytes: output.bytes,
    packages: [...packages].map(([name, bytes]) => ({ name, bytes })).sort((a, b) => b.bytes - a.bytes),
    topInputs: inputs.sort((a, b) => b.bytes - a.bytes).slice(0, 10),
  }
}

/** `node_modules/pg/lib/client.js` → `pg`; `node_modules/@scope/x/y.js` → `@scope/x`. */
function packageOf(path: string): string | undefined {
  const match = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(path.replaceAll('\\', '/'))
  return match?.[1]
}

const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KiB`

async function main(): Promise<void> {
  const args = process.argv.slice(2)
  const awsSdk = args.includes('--bundle-aws-sdk') ? 'bundled' : 'external'
  const dir = args.find((arg) => !arg.startsWith('--'))
  const outdir = dir === undefined ? mkdtempSync(join(tmpdir(), 'lambda-bundle-')) : resolve(dir)
  let failed = false
  for (const engine of ['postgres', 'mysql'] as const) {
    const result = await bundle(engine, outdir, { awsSdk })
    const other: Engine = engine === 'postgres' ? 'mysql' : 'postgres'
    const leaked = result.packages.filter(({ name }) => DRIVERS[other].includes(name))
    const sdk = result.packages.filter(({ name }) => isAwsSdkPackage(name))
    console.log(`${engine}: ${kib(result.bytes)} -> ${result.outfile}`)
    console.log(`  packages: ${result.packages.map(({ name, bytes }) => `${name} ${kib(bytes)}`).join(', ')}`)
    console.log('  top inputs:')
    for (const { path, bytes } of result.topInputs) console.log(`    ${kib(bytes).padStart(10)}  ${path}`)
    if (leaked.length > 0) {
      failed = true
      console.log(
        `  ERROR: the ${other} driver is in the ${engine} bundle: ${leaked.map((p) => p.name).join(', ')}`,
      )
    } else {
      console.log(`  ok: no ${DRIVERS[other].join(' / ')} input in the ${engine} bundle`)
    }
    if (awsSdk === 'bundled') {
      const bytes = sdk.reduce((sum, { bytes }) => sum + bytes, 0)
      console.log(
        `  aws sdk: bundled, ${sdk.length} packages, ${kib(bytes)} (not counting other dependencies)`,
      )
    } else if (sdk.length > 0) {
      failed = true
      console.log(`  ERROR: AWS SDK packages in the bundle: ${sdk.map((p) => p.name).join(', ')}`)
    } else {
      console.log('  ok: no @aws-sdk input (external: the Lambda runtime provides the AWS SDK)')
    }
  }
  if (failed) process.exitCode = 1
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main()
}
