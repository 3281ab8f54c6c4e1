/**
 * A latency histogram with logarithmic buckets, 1% wide: each worker records hundreds of thousands of
 * requests, and the parent needs percentiles over all processes together. Bucket counts add up across
 * processes and cross the IPC channel as a small object, where raw samples would not.
 */

/** Bucket i holds latencies in [MIN_MS * GROWTH^i, MIN_MS * GROWTH^(i+1)). */
const MIN_MS = 0.01
const GROWTH = 1.01
const LOG_GROWTH = Math.log(GROWTH)

/** Sparse bucket counts, keyed by bucket index (JSON-safe). */
export type HistogramData = Record<string, number>

export class Histogram {
  readonly #counts = new Map<number, number>()
  #total = 0

  record(ms: number): void {
    const index = ms <= MIN_MS ? 0 : Math.floor(Math.log(ms / MIN_MS) / LOG_GROWTH)
    this.#counts.set(index, (this.#counts.get(index) ?? 0) + 1)
    this.#total++
  }

  add(data: HistogramData): void {
    for (const [index, count] of Object.entries(data)) {
      this.#counts.set(Number(index), (this.#counts.get(Number(index)) ?? 0) + count)
      this.#total += count
    }
  }

  get total(): number {
    return this.#total
  }

  toData(): HistogramData {
    return Object.fromEntries(this.#counts)
  }

  /** The q-quantile (0..1) in ms, within 0.5% (the bucket's geometric middle); NaN when empty. */
  quantile(q: number): number {
    if (this.#total === 0) return Number.NaN
    const rank = Math.max(1, Math.ceil(q * this.#total))
    let seen = 0
    for (const index of [...this.#counts.keys()].sort((a, b) => a - b)) {
      seen += this.#counts.get(index) ?? 0
      if (seen >= rank) return MIN_MS * GROWTH ** (index + 0.5)
    }
    return Number.NaN
  }
}
