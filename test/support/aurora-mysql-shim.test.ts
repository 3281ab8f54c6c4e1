import { describe, expect, it } from 'vitest'
import { ClientPacketRewriter, rewriteAuroraSql } from './aurora-mysql-shim.js'

const REWRITE = { instanceId: '4321', auroraVersion: '3.05.2' }

function packet(sequenceId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(4)
  header.writeUIntLE(payload.length, 0, 3)
  header[3] = sequenceId
  return Buffer.concat([header, payload])
}

function query(sql: string, sequenceId = 0): Buffer {
  return packet(sequenceId, Buffer.concat([Buffer.from([0x03]), Buffer.from(sql, 'utf8')]))
}

/** The packets of a byte stream: [sequence id, payload as text after the command byte]. */
function parse(stream: Buffer): Array<[number, string]> {
  const packets: Array<[number, string]> = []
  let offset = 0
  while (offset < stream.length) {
    const length = stream.readUIntLE(offset, 3)
    packets.push([stream[offset + 3] as number, stream.toString('utf8', offset + 5, offset + 4 + length)])
    offset += 4 + length
  }
  expect(offset).toBe(stream.length)
  return packets
}

describe('the Aurora MySQL shim’s rewriting', () => {
  it('turns Aurora’s variable, view and server id into what MariaDB can answer', () => {
    expect(rewriteAuroraSql(`show global variables like 'aurora_version'`, REWRITE)).toBe(
      `select 'aurora_version' as Variable_name, '3.05.2' as Value`,
    )
    expect(
      rewriteAuroraSql(
        `select session_id = 'MASTER_SESSION_ID' as writer from information_schema.replica_host_status
          where server_id = @@aurora_server_id`,
        REWRITE,
      ),
    ).toBe(
      `select session_id = 'MASTER_SESSION_ID' as writer from aurora_sim.replica_host_status
          where server_id = '4321'`,
    )
    expect(rewriteAuroraSql('select @@port', REWRITE)).toBeUndefined()
  })

  it('rewrites COM_QUERY packets split across chunks and several per chunk, and fixes the length', () => {
    const rewriter = new ClientPacketRewriter(REWRITE)
    const handshake = packet(1, Buffer.from('\x03 @@aurora_server_id in a handshake response', 'latin1'))
    const stream = Buffer.concat([
      handshake,
      query('select @@aurora_server_id as id'),
      query('select 1'),
      query(`show global variables like 'aurora_version'`),
    ])
    // Byte by byte, then all at once: the output is the same.
    const byByte = Buffer.concat([...stream].map((byte) => rewriter.push(Buffer.from([byte]))))
    const atOnce = new ClientPacketRewriter(REWRITE).push(stream)
    expect(byByte).toEqual(atOnce)
    expect(parse(byByte)).toEqual([
      [1, ' @@aurora_server_id in a handshake response'],
      [0, `select '4321' as id`],
      [0, 'select 1'],
      [0, `select 'aurora_version' as Variable_name, '3.05.2' as Value`],
    ])
    expect(rewriter.queries).toBe(3)
    expect(rewriter.rewritten).toBe(2)
  })

  it('holds back an incomplete packet until the rest arrives, and keeps non-ASCII bytes intact', () => {
    const rewriter = new ClientPacketRewriter(REWRITE)
    const sql = `select 'é€' as t from information_schema.replica_host_status`
    const bytes = query(sql)
    expect(rewriter.push(bytes.subarray(0, 10))).toHaveLength(0)
    const out = rewriter.push(bytes.subarray(10))
    expect(parse(out)).toEqual([[0, `select 'é€' as t from aurora_sim.replica_host_status`]])
  })
})
