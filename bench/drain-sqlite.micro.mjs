#!/usr/bin/env node
// SQLite's own CPU per row for the drain's read and delete, per row layout (issue 10 §5):
//   node bench/drain-sqlite.micro.mjs [ROWS] [REPS]
// Not a *.bench.mjs (npm run bench does not run it): it compares layouts, not builds.
// Process CPU (user + system, every thread: node-sqlite3 runs statements on libuv's pool)
// per row, for: reading every row as the drain does (batches of 1,000, framed records) and
// deleting them in ranges of 2,000 at synchronous=NORMAL, secure_delete=ON, as the ack flush does.
//   schema 1: one integer column per field, the record header built per row by printf/unhex
//   schema 2: the header stored at accept time (`head`), a record is a concatenation
//   schema 2 without the event_id UNIQUE index: what the idempotency index costs (not adopted)
import { mkdtempSync, rmSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sqlite3 from 'sqlite3';
import { RECORDS_SQL, V1_HEAD_SQL } from '../dist/src/outbox/records.js';
import { median } from './stats.mjs';

const N = Number(process.argv[2] ?? 100_000);
const REPS = Number(process.argv[3] ?? 3);

const V1_TABLE =
  'CREATE TABLE punches (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, org_id TEXT NOT NULL, subject_id TEXT NOT NULL, method INTEGER NOT NULL, ' +
  'occurred_at_ms INTEGER NOT NULL, clock_synced INTEGER NOT NULL, match_score INTEGER NOT NULL, liveness INTEGER NOT NULL, accepted_at_ms INTEGER NOT NULL, mono_ms REAL, session TEXT);';
// The drain's read before schema 2 (git show 078dceb:src/outbox/records.ts).
const V1_READ = `SELECT count(*) AS n, CAST(group_concat(rec, '' ORDER BY seq) AS BLOB) AS b FROM (SELECT seq, ${V1_HEAD_SQL.replace(/^CAST\((.*) AS BLOB\)$/, '$1')} || CAST(event_id AS BLOB) || CAST(org_id AS BLOB) || CAST(subject_id AS BLOB) AS rec FROM punches WHERE seq > ? ORDER BY seq LIMIT ?)`;
const V2 = (unique) =>
  `CREATE TABLE p2 (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL${unique ? ' UNIQUE' : ''}, org_id TEXT NOT NULL, subject_id TEXT NOT NULL, head BLOB NOT NULL, accepted_at_ms INTEGER NOT NULL, mono_ms REAL, session TEXT); ` +
  `INSERT INTO p2 SELECT seq, event_id, org_id, subject_id, ${V1_HEAD_SQL}, accepted_at_ms, mono_ms, session FROM punches ORDER BY seq; DROP TABLE punches; ALTER TABLE p2 RENAME TO punches; VACUUM;`;
const layouts = [
  { name: 'schema 1 (integer columns, header by printf/unhex)', prep: '', read: V1_READ },
  { name: 'schema 2 (stored header)', prep: V2(true), read: RECORDS_SQL },
  { name: 'schema 2 without the event_id index', prep: V2(false), read: RECORDS_SQL },
];

const open = (p) =>
  new Promise((res, rej) => {
    const d = new sqlite3.Database(p, (e) => (e ? rej(e) : res(d)));
  });
const exec = (d, sql) => new Promise((res, rej) => d.exec(sql, (e) => (e ? rej(e) : res())));
const prepare = (d, sql) =>
  new Promise((res, rej) => {
    const s = d.prepare(sql, (e) => (e ? rej(e) : res(s)));
  });
const step = (st, m, params) => new Promise((res, rej) => st[m](params, (e, r) => (e ? rej(e) : res(r))));
const cpuUs = (c) => c.user + c.system;

const dir = mkdtempSync(join(tmpdir(), 'tbx-drain-micro-'));
try {
  const tpl = join(dir, 'tpl.db');
  const t = await open(tpl);
  await exec(t, `PRAGMA journal_mode=WAL; ${V1_TABLE} BEGIN;`);
  const ins = await prepare(t, 'INSERT INTO punches (event_id, org_id, subject_id, method, occurred_at_ms, clock_synced, match_score, liveness, accepted_at_ms) VALUES (?,?,?,?,?,1,0,0,?)');
  const now = Date.now();
  for (let i = 0; i < N; i++) await step(ins, 'run', [`01900000-0000-7000-8000-${String(i).padStart(12, '0')}`, 'org-bench', `subject-${i % 997}`, 3, now + i, now + i]);
  await new Promise((r) => ins.finalize(r));
  await exec(t, 'COMMIT; PRAGMA wal_checkpoint(TRUNCATE);');
  await new Promise((r) => t.close(r));
  const rows = [];
  for (const l of layouts) {
    const read = [];
    const del = [];
    for (let rep = 0; rep < REPS; rep++) {
      const p = join(dir, `l${rep}.db`);
      copyFileSync(tpl, p);
      const d = await open(p);
      await exec(d, 'PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA secure_delete=ON;');
      if (l.prep) await exec(d, `${l.prep} PRAGMA wal_checkpoint(TRUNCATE);`);
      const st = await prepare(d, l.read);
      let c0 = process.cpuUsage();
      let cursor = 0;
      let n = 0;
      for (;;) {
        const r = await step(st, 'get', [cursor, 1000]);
        if (!r || r.n === 0) break;
        n += r.n;
        cursor += r.n; // the rows are 1..N, consecutive
      }
      read.push(cpuUs(process.cpuUsage(c0)) / n);
      await new Promise((r) => st.finalize(r));
      const ds = await prepare(d, 'DELETE FROM punches WHERE seq BETWEEN ? AND ?');
      c0 = process.cpuUsage();
      for (let lo = 1; lo <= N; lo += 2000) await step(ds, 'run', [lo, lo + 1999]);
      del.push(cpuUs(process.cpuUsage(c0)) / N);
      await new Promise((r) => ds.finalize(r));
      await new Promise((r) => d.close(r));
      rmSync(p, { force: true });
    }
    rows.push({ layout: l.name, 'read µs/row': median(read).toFixed(2), 'delete µs/row': median(del).toFixed(2), reads: read.map((x) => x.toFixed(2)).join(' '), deletes: del.map((x) => x.toFixed(2)).join(' ') });
  }
  console.table(rows);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
