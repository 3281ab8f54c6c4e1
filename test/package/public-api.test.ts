import { join } from 'node:path'
import ts from 'typescript'
import { beforeAll, describe, expect, it } from 'vitest'

// The package's two entry points (package.json "exports"): what a user can import.
const ROOT = join(import.meta.dirname, '../..')
const ENTRIES = ['src/index.ts', 'src/lambda/index.ts'].map((entry) => join(ROOT, entry))

let program: ts.Program

beforeAll(() => {
  const { config } = ts.readConfigFile(join(ROOT, 'tsconfig.json'), ts.sys.readFile)
  const { options } = ts.parseJsonConfigFileContent(config, ts.sys, ROOT)
  program = ts.createProgram(ENTRIES, { ...options, noEmit: false, emitDeclarationOnly: true })
})

/** Every name an entry point exports, with the declarations it stands for (aliases followed). */
function exportsOf(entry: string): Array<{ name: string; declarations: readonly ts.Declaration[] }> {
  const checker = program.getTypeChecker()
  const source = program.getSourceFile(entry)
  const module = source === undefined ? undefined : checker.getSymbolAtLocation(source)
  if (module === undefined) throw new Error(`${entry} is not a module of the program`)
  return checker.getExportsOfModule(module).map((exported) => {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported
    return { name: exported.name, declarations: symbol.declarations ?? [] }
  })
}

/** The `any` type nodes of a declaration file (in code, not in its comments), as `file:line`. */
function anyTypesIn(fileName: string, text: string): string[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true)
  const found: string[] = []
  const visit = (node: ts.Node): void => {
    if (node.kind === ts.SyntaxKind.AnyKeyword) {
      const { line } = source.getLineAndCharacterOfPosition(node.getStart(source))
      found.push(`${fileName}:${line + 1}: ${text.split('\n')[line]?.trim()}`)
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  return found
}

describe('the public API', () => {
  it('documents every export of both entry points with TSDoc that has an @example', () => {
    const undocumented: string[] = []
    let exports = 0
    for (const entry of ENTRIES) {
      for (const { name, declarations } of exportsOf(entry)) {
        exports++
        const tags = declarations.flatMap((declaration) => ts.getJSDocTags(declaration))
        if (!tags.some((tag) => tag.tagName.text === 'example')) undocumented.push(name)
      }
    }
    // The entry points really were read: a broken program would export nothing and pass.
    expect(exports).toBeGreaterThan(50)
    expect(undocumented).toEqual([])
  })

  it('has no `any` in the declaration files it ships', () => {
    const emitted = new Map<string, string>()
    const result = program.emit(undefined, (fileName, text) => emitted.set(fileName, text), undefined, true)
    expect(result.diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))).toEqual([])
    const declarations = [...emitted].filter(([fileName]) => fileName.includes(`${join(ROOT, 'src')}`))
    expect(declarations.length).toBeGreaterThan(40)
    expect(declarations.flatMap(([fileName, text]) => anyTypesIn(fileName, text))).toEqual([])
  })
})
