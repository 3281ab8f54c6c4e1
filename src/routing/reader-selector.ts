import type { ReaderStrategy } from '../config/create-db-config.js'

/** Something with a current load, for the least-busy strategy. */
export interface Loaded {
  load(): number
}

/** Picks the reader for the next read, by the configured strategy. */
export class ReaderSelector {
  readonly #strategy: ReaderStrategy
  #next = 0

  constructor(strategy: ReaderStrategy) {
    this.#strategy = strategy
  }

  pick<T extends Loaded>(readers: ReadonlyArray<T>): T {
    const count = readers.length
    if (count === 1) return readers[0] as T
    switch (this.#strategy) {
      case 'random':
        return readers[Math.floor(Math.random() * count)] as T
      case 'least-busy': {
        // Scan from the round-robin position so equal loads still spread evenly.
        const start = this.#advance(count)
        let bestIndex = start
        let best = readers[start] as T
        let bestLoad = best.load()
        for (let offset = 1; offset < count && bestLoad > 0; offset++) {
          const candidate = readers[(start + offset) % count] as T
          const load = candidate.load()
          if (load < bestLoad) {
            bestIndex = (start + offset) % count
            best = candidate
            bestLoad = load
          }
        }
        // Continue after the reader picked, so readers tied for least busy take turns.
        this.#next = (bestIndex + 1) % count
        return best
      }
      default:
        return readers[this.#advance(count)] as T
    }
  }

  #advance(count: number): number {
    const index = this.#next % count
    this.#next = (index + 1) % count
    return index
  }
}
