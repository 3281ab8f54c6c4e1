import { afterEach, describe, expect, test, vi } from 'vitest'
import { type Loaded, ReaderSelector } from '../../src/routing/reader-selector.js'

class FakeReader implements Loaded {
  readonly name: string
  current: number

  constructor(name: string, load = 0) {
    this.name = name
    this.current = load
  }

  load(): number {
    return this.current
  }
}

function readers(...loads: number[]): FakeReader[] {
  return loads.map((load, index) => new FakeReader(`reader-${index}`, load))
}

function tally(picks: ReadonlyArray<FakeReader>): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const pick of picks) counts[pick.name] = (counts[pick.name] ?? 0) + 1
  return counts
}

afterEach(() => {
  vi.restoreAllMocks()
})

describe('round-robin', () => {
  test('cycles through the readers in order', () => {
    const selector = new ReaderSelector('round-robin')
    const list = readers(0, 0, 0)
    const picks = Array.from({ length: 7 }, () => selector.pick(list).name)
    expect(picks).toEqual([
      'reader-0',
      'reader-1',
      'reader-2',
      'reader-0',
      'reader-1',
      'reader-2',
      'reader-0',
    ])
  })

  test('spreads many picks evenly and ignores load', () => {
    const selector = new ReaderSelector('round-robin')
    const list = readers(9, 0, 4, 1)
    const counts = tally(Array.from({ length: 400 }, () => selector.pick(list)))
    expect(counts).toEqual({ 'reader-0': 100, 'reader-1': 100, 'reader-2': 100, 'reader-3': 100 })
  })

  test('a single reader is always picked', () => {
    const selector = new ReaderSelector('round-robin')
    const list = readers(0)
    for (let i = 0; i < 5; i++) expect(selector.pick(list)).toBe(list[0])
  })
})

describe('random', () => {
  test('every reader is picked over many picks, roughly evenly', () => {
    const selector = new ReaderSelector('random')
    const list = readers(0, 0, 0)
    const counts = tally(Array.from({ length: 3_000 }, () => selector.pick(list)))
    // Expected 1000 each; the bounds are more than 8 standard deviations away.
    for (const reader of list) {
      expect(counts[reader.name]).toBeGreaterThan(800)
      expect(counts[reader.name]).toBeLessThan(1_200)
    }
  })

  test('maps the whole random range onto the readers, first to last', () => {
    const selector = new ReaderSelector('random')
    const list = readers(0, 0, 0, 0)
    const values = [0, 0.2499, 0.25, 0.5, 0.7499, 0.75, 0.999999]
    const random = vi.spyOn(Math, 'random')
    for (const value of values) random.mockReturnValueOnce(value)
    const picks = values.map(() => selector.pick(list).name)
    expect(picks).toEqual([
      'reader-0',
      'reader-0',
      'reader-1',
      'reader-2',
      'reader-2',
      'reader-3',
      'reader-3',
    ])
  })
})

describe('least-busy', () => {
  test('picks the reader with the lowest load', () => {
    const selector = new ReaderSelector('least-busy')
    const list = readers(5, 2, 7, 3)
    for (let i = 0; i < 8; i++) expect(selector.pick(list).name).toBe('reader-1')
  })

  test('follows the load as it changes', () => {
    const selector = new ReaderSelector('least-busy')
    const list = readers(3, 3, 3)
    const [first, second, third] = list as [FakeReader, FakeReader, FakeReader]
    first.current = 0
    expect(selector.pick(list)).toBe(first)
    first.current = 9
    third.current = 1
    expect(selector.pick(list)).toBe(third)
    second.current = 0
    expect(selector.pick(list)).toBe(second)
  })

  test('spreads picks round-robin when every reader has the same load', () => {
    for (const load of [0, 4]) {
      const selector = new ReaderSelector('least-busy')
      const list = readers(load, load, load)
      const picks = Array.from({ length: 6 }, () => selector.pick(list).name)
      expect(picks).toEqual(['reader-0', 'reader-1', 'reader-2', 'reader-0', 'reader-1', 'reader-2'])
    }
  })

  test('spreads picks evenly over the readers tied for the lowest load, skipping busier ones', () => {
    // reader-1 is busy; reader-0 and reader-2 are equally idle and should share the reads.
    for (const loads of [
      [0, 5, 0],
      [2, 5, 2],
      [1, 1, 6, 6],
    ]) {
      const selector = new ReaderSelector('least-busy')
      const list = readers(...loads)
      const minimum = Math.min(...loads)
      const tied = list.filter((reader) => reader.current === minimum)
      const picks = Array.from({ length: 12 * tied.length }, () => selector.pick(list))
      const counts = tally(picks)
      expect(Object.keys(counts).sort()).toEqual(tied.map((reader) => reader.name).sort())
      for (const reader of tied) expect(counts[reader.name]).toBe(12)
    }
  })
})
