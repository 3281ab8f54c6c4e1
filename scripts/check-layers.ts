/**
 * Fails when the folders of `src/` import each other in a cycle, so the code stays a strict stack of
 * layers (issue #15). Each folder is one node (`src/routing/…` is `routing`), and so is each file
 * directly in `src/` (`errors.ts`, `create-db.ts`, `index.ts`). Every relative import counts: value and
 * type-only imports, `export … from`, side-effect imports, `import('…')` calls and `import('…')` types,
 * read with TypeScript's own pre-processor, so comments and strings are not mistaken for imports.
 *
 * Run: `tsx scripts/check-layers.ts [root]` (root defaults to `src`; `npm run check:layers`, part of
 * `npm test`). Exit code 1 on a cycle, printing the folders that import each other, the shortest cycle
 * through each, and the file imports behind those edges; also 1 for a root without source files, so a
 * wrong path cannot pass. Exit code 0 otherwise, printing the layers, bottom first.
 */
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import ts from 'typescript'

/** One relative import of one file: both paths relative to the root, with `/` separators. */
export interface FileImport {
  readonly from: string
  readonly to: string
}

/** Folder (or top-level file) → the nodes it imports → the file imports behind each edge. */
export type FolderGraph = Map<string, Map<string, FileImport[]>>

/** What {@link checkLayers} found under one root. */
export interface LayerReport {
  readonly files: number
  readonly graph: FolderGraph
  /**
   * Each set of nodes that import each other, directly or around a loop (a strongly connected
   * component), with the shortest closed path through each of its nodes.
   */
  readonly tangles: ReadonlyArray<{ readonly members: string[]; readonly cycles: string[][] }>
  /** Without cycles: the nodes by layer, bottom (imports no other node) first. */
  readonly layers: string[][]
}

/** The node a file belongs to: its top-level folder, or its own name for a file directly in the root. */
export function nodeOf(file: string): string {
  const slash = file.indexOf('/')
  return slash === -1 ? file : file.slice(0, slash)
}

function sourceFiles(root: string, dir = ''): string[] {
  const files: string[] = []
  for (const entry of readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const relative = dir === '' ? entry.name : `${dir}/${entry.name}`
    if (entry.isDirectory()) files.push(...sourceFiles(root, relative))
    else if (/\.(ts|mts|cts)$/.test(entry.name)) files.push(relative)
  }
  return files.sort()
}

/** The relative imports of every TypeScript file under `root`, resolved to files under it. */
export function readImports(root: string): { files: string[]; imports: FileImport[] } {
  const files = sourceFiles(root)
  const imports: FileImport[] = []
  for (const file of files) {
    const text = readFileSync(path.join(root, file), 'utf8')
    for (const { fileName } of ts.preProcessFile(text, true, true).importedFiles) {
      if (!fileName.startsWith('./') && !fileName.startsWith('../')) continue
      // NodeNext specifiers name the emitted file: `./x.js` is `./x.ts` in the source.
      const target = path.posix
        .normalize(path.posix.join(path.posix.dirname(file), fileName))
        .replace(/\.(m|c)?js$/, '.$1ts')
      if (target.startsWith('../')) continue
      imports.push({ from: file, to: target })
    }
  }
  return { files, imports }
}

/** The graph between nodes; imports inside one folder are not edges. */
export function folderGraph(files: readonly string[], imports: readonly FileImport[]): FolderGraph {
  const graph: FolderGraph = new Map()
  for (const file of files) graph.set(nodeOf(file), graph.get(nodeOf(file)) ?? new Map())
  for (const edge of imports) {
    const from = nodeOf(edge.from)
    const to = nodeOf(edge.to)
    if (from === to) continue
    const targets = graph.get(from) ?? new Map<string, FileImport[]>()
    graph.set(from, targets)
    targets.set(to, [...(targets.get(to) ?? []), edge])
  }
  return graph
}

/** Tarjan's strongly connected components with more than one node: each holds at least one cycle. */
function tangledGroups(graph: FolderGraph): string[][] {
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const groups: string[][] = []
  const visit = (node: string): void => {
    index.set(node, index.size)
    low.set(node, index.get(node)!)
    stack.push(node)
    onStack.add(node)
    for (const next of graph.get(node)?.keys() ?? []) {
      if (!index.has(next)) {
        visit(next)
        low.set(node, Math.min(low.get(node)!, low.get(next)!))
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node)!, index.get(next)!))
      }
    }
    if (low.get(node) !== index.get(node)) return
    const group: string[] = []
    let member: string | undefined
    do {
      member = stack.pop()!
      onStack.delete(member)
      group.push(member)
    } while (member !== node)
    if (group.length > 1) groups.push(group.sort())
  }
  for (const node of [...graph.keys()].sort()) if (!index.has(node)) visit(node)
  return groups
}

/** The shortest closed path from `start` back to it inside a tangled group (breadth-first). */
function cycleThrough(graph: FolderGraph, group: readonly string[], start: string): string[] {
  const members = new Set(group)
  const cameFrom = new Map<string, string>()
  const queue = [start]
  while (queue.length > 0) {
    const node = queue.shift()!
    for (const next of [...(graph.get(node)?.keys() ?? [])].sort()) {
      if (!members.has(next)) continue
      if (next === start) {
        const path = [node]
        while (path[0] !== start) path.unshift(cameFrom.get(path[0]!)!)
        return [...path, start]
      }
      if (cameFrom.has(next)) continue
      cameFrom.set(next, node)
      queue.push(next)
    }
  }
  return [start, start]
}

/** The distinct shortest cycles through each node of a group (a rotation of a found one is not new). */
function cyclesOf(graph: FolderGraph, group: readonly string[]): string[][] {
  const seen = new Set<string>()
  const cycles: string[][] = []
  for (const start of group) {
    const cycle = cycleThrough(graph, group, start)
    const open = cycle.slice(0, -1)
    const first = open.indexOf([...open].sort()[0]!)
    const key = [...open.slice(first), ...open.slice(0, first)].join(' ')
    if (seen.has(key)) continue
    seen.add(key)
    cycles.push(cycle)
  }
  return cycles
}

/** The nodes by layer: a node sits one layer above the highest node it imports. */
function layersOf(graph: FolderGraph): string[][] {
  const level = new Map<string, number>()
  const levelOf = (node: string): number => {
    const known = level.get(node)
    if (known !== undefined) return known
    const below = [...(graph.get(node)?.keys() ?? [])].map(levelOf)
    const mine = below.length === 0 ? 0 : Math.max(...below) + 1
    level.set(node, mine)
    return mine
  }
  const layers: string[][] = []
  for (const node of [...graph.keys()].sort()) {
    const at = levelOf(node)
    while (layers.length <= at) layers.push([])
    layers[at]!.push(node)
  }
  return layers
}

export function checkLayers(root: string): LayerReport {
  const { files, imports } = readImports(root)
  const graph = folderGraph(files, imports)
  const groups = tangledGroups(graph)
  return {
    files: files.length,
    graph,
    tangles: groups.map((members) => ({ members, cycles: cyclesOf(graph, members) })),
    layers: groups.length === 0 ? layersOf(graph) : [],
  }
}

/** The report as printed; the exit code is 1 for a cycle, and for a root without any source file. */
export function describeReport(root: string, report: LayerReport): { exitCode: number; text: string } {
  if (report.files === 0) {
    return { exitCode: 1, text: `check-layers: no TypeScript file under ${root}: nothing was checked` }
  }
  if (report.tangles.length > 0) {
    const lines = [`check-layers: import cycles between the folders of ${root}:`]
    for (const { members, cycles } of report.tangles) {
      lines.push('', `  ${members.join(', ')} import each other; shortest cycle through each:`)
      const edges = new Set<string>()
      for (const cycle of cycles) {
        lines.push(`    ${cycle.join(' → ')}`)
        for (let i = 0; i + 1 < cycle.length; i++) edges.add(`${cycle[i]} → ${cycle[i + 1]}`)
      }
      lines.push('  the imports behind those edges:')
      for (const edge of [...edges].sort()) {
        const [from, to] = edge.split(' → ') as [string, string]
        lines.push(`    ${edge}`)
        for (const link of report.graph.get(from)?.get(to) ?? []) {
          lines.push(`      ${link.from} imports ${link.to}`)
        }
      }
    }
    lines.push('', 'Move code to the layer it belongs to, so that the folders form a stack again.')
    return { exitCode: 1, text: lines.join('\n') }
  }
  const lines = [
    `check-layers: no cycle between the ${report.graph.size} folders and top-level files of ${root} (${report.files} files); layers, bottom first:`,
    ...report.layers.map((layer, i) => `  ${i}: ${layer.join(', ')}`),
  ]
  return { exitCode: 0, text: lines.join('\n') }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const root = process.argv[2] ?? 'src'
  const { exitCode, text } = describeReport(root, checkLayers(root))
  if (exitCode === 0) console.log(text)
  else console.error(text)
  process.exitCode = exitCode
}
