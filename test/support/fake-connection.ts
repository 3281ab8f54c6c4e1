import type { CompiledQuery, DatabaseConnection, QueryResult } from 'kysely'

/** What a fake connection answers a statement: its rows, or an error to throw. */
export type Answer = ReadonlyArray<Record<string, unknown>> | Error

/**
 * A Kysely connection without a server, for the SQL-and-parsing unit tests: it answers each statement
 * by the first pattern that matches its text, fails on any other, and records what it was sent.
 */
export function connection(
  answers: ReadonlyArray<readonly [RegExp, Answer]>,
): DatabaseConnection & { sent: string[] } {
  const sent: string[] = []
  return {
    sent,
    async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
      sent.push(query.sql)
      const answer = answers.find(([pattern]) => pattern.test(query.sql))?.[1]
      if (answer === undefined) throw new Error(`unexpected statement: ${query.sql}`)
      if (answer instanceof Error) throw answer
      return { rows: answer as R[] }
    },
    // biome-ignore lint/correctness/useYield: never streamed here
    async *streamQuery() {
      throw new Error('not streamed')
    },
  }
}
