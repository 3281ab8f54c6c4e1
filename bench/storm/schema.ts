import type { Generated } from 'kysely'
import type { Engine } from '../../test/support/sql.js'

/** The one table the storm benchmark reads (point SELECTs on the first rows) and appends to. */
export interface StormDatabase {
  storm_item: {
    id: Generated<number>
    name: string
    payload: number
  }
}

export function createTableSql(engine: Engine): string {
  return engine === 'postgres'
    ? 'CREATE TABLE storm_item (id serial PRIMARY KEY, name text NOT NULL, payload int NOT NULL)'
    : 'CREATE TABLE storm_item (id int AUTO_INCREMENT PRIMARY KEY, name varchar(64) NOT NULL, payload int NOT NULL) ENGINE=InnoDB'
}

export function seedSql(engine: Engine, rows: number): string {
  return engine === 'postgres'
    ? `INSERT INTO storm_item (name, payload) SELECT 'item-' || i, i FROM generate_series(1, ${rows}) AS i`
    : `INSERT INTO storm_item (name, payload) SELECT CONCAT('item-', seq), seq FROM seq_1_to_${rows}`
}
