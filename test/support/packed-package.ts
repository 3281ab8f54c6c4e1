// The package as a consumer gets it: the build `npm pack`ed into a tarball, and the pinned Node to run
// consumers with. Shared by test/package/packaging.test.ts and test/package/peer-versions.test.ts.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url))

/** The files `npm run build` writes that a consumer loads. */
export const BUILT_FILES: readonly string[] = [
  'dist/index.js',
  'dist/index.cjs',
  'dist/index.d.ts',
  'dist/index.d.cts',
  'dist/lambda/index.js',
  'dist/lambda/index.cjs',
  'dist/lambda/index.d.ts',
  'dist/lambda/index.d.cts',
]

/** The Node pinned as a devDependency (22.x); the running Node when that is not installed. */
export function pinnedNode(): string {
  const pinned = join(repositoryRoot, 'node_modules', '.bin', 'node')
  return existsSync(pinned) ? pinned : process.execPath
}

/**
 * Throws unless the build is there and `node` can load it (the CommonJS build needs require(esm),
 * Node >= 22.12): a consumer test must fail, not pass vacuously, when it cannot run.
 */
export function assertPackable(node: string): void {
  const missing = BUILT_FILES.filter((file) => !existsSync(join(repositoryRoot, file)))
  if (missing.length > 0) {
    throw new Error(`${missing.join(', ')} missing: run \`npm run build\` first (\`npm test\` does)`)
  }
  const version = execFileSync(node, ['-p', 'process.versions.node'], { encoding: 'utf8' }).trim()
  const [major = 0, minor = 0] = version.split('.').map(Number)
  if (major < 22 || (major === 22 && minor < 12)) {
    throw new Error(`${node} is Node ${version}; the CommonJS build needs require(esm), Node >= 22.12`)
  }
}

export interface PackedPackage {
  /** The .tgz `npm pack` wrote, for `npm install <tarball>`. */
  readonly tarball: string
  /** The paths inside the tarball, relative to its package/ directory. */
  readonly files: readonly string[]
  /** The tarball extracted: the package directory as it would land in node_modules. */
  readonly unpacked: string
}

/** `npm pack`s the repository (already built) into `directory`, and lists and extracts the tarball. */
export function packPackage(directory: string): PackedPackage {
  mkdirSync(directory, { recursive: true })
  execFileSync('npm', ['pack', '--ignore-scripts', '--pack-destination', directory], {
    cwd: repositoryRoot,
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  const name = readdirSync(directory).find((file) => file.endsWith('.tgz'))
  if (name === undefined) throw new Error(`npm pack wrote no tarball into ${directory}`)
  const tarball = join(directory, name)
  const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.replace(/^package\//, ''))
  execFileSync('tar', ['-xzf', tarball, '-C', directory])
  return { tarball, files, unpacked: join(directory, 'package') }
}
