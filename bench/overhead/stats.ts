/** Small statistics and formatting helpers for the overhead benchmark. */

/** The q-quantile (0..1) of the values, linearly interpolated. NaN for an empty list. */
export function quantile(values: ReadonlyArray<number>, q: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const position = (sorted.length - 1) * q
  const lower = Math.floor(position)
  const upper = Math.ceil(position)
  const low = sorted[lower] as number
  const high = sorted[upper] as number
  return low + (high - low) * (position - lower)
}

export function median(values: ReadonlyArray<number>): number {
  return quantile(values, 0.5)
}

/** A shuffled copy (Fisher-Yates). */
export function shuffled<T>(items: ReadonlyArray<T>): T[] {
  const copy = [...items]
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const item = copy[i] as T
    copy[i] = copy[j] as T
    copy[j] = item
  }
  return copy
}

/** `+1.2%` / `-0.4%` for a ratio such as 1.012. */
export function percent(ratio: number): string {
  const value = (ratio - 1) * 100
  return `${value >= 0 ? '+' : ''}${value.toFixed(1)}%`
}

/** `+3.1` / `-0.8`. */
export function signed(value: number): string {
  return `${value >= 0 ? '+' : ''}${value.toFixed(1)}`
}

/** Renders rows as a text table; `align` gives each column's alignment ('l' or 'r'). */
export function table(
  header: ReadonlyArray<string>,
  align: ReadonlyArray<'l' | 'r'>,
  rows: ReadonlyArray<ReadonlyArray<string>>,
): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  )
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((cell, column) => {
        const width = widths[column] ?? 0
        return align[column] === 'r' ? cell.padStart(width) : cell.padEnd(width)
      })
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}
