// `tallybox demo --device p1`: signed print jobs from the cloud emulator, printed by the printer
// simulator, checked from evidence (the simulator's recorded bytes by SHA-256, the erasure receipts
// against the device's provisioned public key). The break tests corrupt and drop bytes at the
// printer, tamper with and drop what reaches the cloud, and make the printer never confirm: each
// time the summary says so and the demo exits non-zero.
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { runP1Demo, type JobEvidence, type P1DemoOptions, type P1Summary } from '../../src/cli/demo-p1.js';
import { pb } from '../../src/proto/index.js';
import type { DirJobRecorder } from '../../simulators/printer/recorder.js';
import type { JobRecorder, RecordedJobWriter } from '../../simulators/printer/types.js';
import { startEmbeddedBroker } from '../../simulators/cloud/broker.js';
import { CloudSink } from '../../simulators/cloud/sink.js';
import { CLI } from '../helpers/agent-process.js';

const SUMMARY_KEYS = ['sent', 'printed', 'failed', 'uncertain', 'bytes', 'receiptsVerified', 'resultsRejected', 'contradicted'];

async function runJson(opts: Omit<P1DemoOptions, 'json' | 'out'> = {}): Promise<{ code: number; jobs: JobEvidence[]; summary: P1Summary; lines: string[] }> {
  const lines: string[] = [];
  const code = await runP1Demo({ json: true, out: (l) => lines.push(l), ...opts });
  const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { code, jobs: parsed.slice(0, -1) as unknown as JobEvidence[], summary: parsed.at(-1) as unknown as P1Summary, lines };
}

/** A recorder that hands the real one different bytes than the printer received, for one job. */
function breakingRecorder(real: DirJobRecorder, how: Record<string, 'corrupt' | 'drop'>): JobRecorder {
  return {
    jobs: () => real.jobs(),
    begin(meta) {
      const w = real.begin(meta);
      const mode = meta.name ? how[meta.name] : undefined;
      let first = true;
      const wrapped: RecordedJobWriter = {
        id: w.id,
        write(chunk) {
          const isFirst = first;
          first = false;
          if (!mode || !isFirst) return w.write(chunk);
          if (mode === 'drop') return true; // the first chunk never reaches the output tray
          const c = Buffer.from(chunk);
          c[c.length >> 1] = c[c.length >> 1]! ^ 0x20;
          return w.write(c);
        },
        drained: () => w.drained(),
        end: (s) => w.end(s),
      };
      return wrapped;
    },
  };
}

describe('tallybox demo --device p1', () => {
  it('--json (the CLI): one line per job, then exactly one summary line; every job printed once, every receipt verified', async () => {
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [CLI, 'demo', '--device', 'p1', '--json'], { encoding: 'utf8', timeout: 150_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
    });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const summary = parsed.at(-1)!;
    expect(Object.keys(summary)).toEqual(SUMMARY_KEYS);
    expect(parsed.filter((p) => 'sent' in p)).toHaveLength(1);
    expect(summary).toMatchObject({ sent: 3, printed: 3, failed: 0, uncertain: 0, receiptsVerified: 3, resultsRejected: 0, contradicted: 0 });
    expect(summary.bytes).toBeGreaterThan(100_000);
    const jobs = parsed.slice(0, -1) as unknown as JobEvidence[];
    expect(jobs.map((j) => j.source)).toEqual(['inline', 'fetched', 'inline']);
    for (const j of jobs) expect(j).toMatchObject({ outcome: 'printed', exactCopies: 1, recordings: 1, reported: 'confirmed', receipt: 'verified', contradicted: false });
  }, 180_000);

  it('human output tells the story: signed jobs out, statuses back, the evidence, the summary', async () => {
    const lines: string[] = [];
    const code = await runP1Demo({ json: false, out: (l) => lines.push(l) });
    const text = lines.join('\n');
    expect(code, text).toBe(0);
    expect(text).toMatch(/printer simulator: raw 9100 \+ PJL/);
    expect(text).toMatch(/signed PrintJob demo-job-1: \d+ bytes inline/);
    expect(text).toMatch(/signed PrintJob demo-job-2: fetch \d+ bytes over HTTPS/);
    expect(text).toMatch(/demo-job-2 confirmed .*erasure receipt: key destroyed, spool file removed, scan 0 hits \(verified\)/);
    expect(text).toMatch(/demo-job-3 \(inline\): PRINTED: 1 exact copy of 1 recorded; device reported confirmed; receipt verified/);
    expect(text).toMatch(/Done: 3 jobs sent, 3 printed byte for byte, 0 failed, 0 uncertain, \d+ bytes, 3 receipts verified\./);
    expect(text).not.toMatch(/FAILED|CONTRADICTED/);
  }, 180_000);

  it('the printer records corrupt bytes for one job and loses bytes of another: both failed, contradicted, exit 1', async () => {
    const r = await runJson({ stack: { wrapRecorder: (real) => breakingRecorder(real, { 'demo-job-2': 'corrupt', 'demo-job-3': 'drop' }) } });
    expect(r.code, r.lines.join('\n')).toBe(1);
    const by = Object.fromEntries(r.jobs.map((j) => [j.jobId, j]));
    expect(by['demo-job-1']).toMatchObject({ outcome: 'printed', exactCopies: 1 });
    // The agent saw its bytes accepted and the printer's END: it says confirmed; the evidence says otherwise.
    for (const id of ['demo-job-2', 'demo-job-3']) expect(by[id], id).toMatchObject({ outcome: 'failed', exactCopies: 0, recordings: 1, reported: 'confirmed', contradicted: true });
    expect(r.summary).toMatchObject({ sent: 3, printed: 1, failed: 2, contradicted: 2 });
    expect(r.summary.bytes).toBeLessThan(20_000); // only job 1's bytes count
  }, 180_000);

  it('a receipt tampered with on the way, and a receipt that never arrives: not counted, exit 1', async () => {
    const r = await runJson({
      // Job 1 never settles in the cloud's view: the demo waits this long for it (the others settle in seconds).
      timeoutMs: 45_000,
      interceptResult: (raw, result) => {
        if (!result.receipt?.length) return raw;
        const job = result.printJobStatus?.jobId;
        if (job === 'demo-job-1') return null; // the result carrying job 1's receipt is lost
        if (job !== 'demo-job-3') return raw;
        // Flip one character of the receipt's signed body: "ok":true ... stays JSON, the signatures break.
        const m = pb.CommandResult.decode(raw);
        const signed = JSON.parse(Buffer.from(m.receipt).toString('utf8')) as { body: string };
        signed.body = signed.body.replace('"ok":true', '"ok":false');
        m.receipt = Buffer.from(JSON.stringify(signed), 'utf8');
        return Buffer.from(pb.CommandResult.encode(m).finish());
      },
    });
    expect(r.code, r.lines.join('\n')).toBe(1);
    const by = Object.fromEntries(r.jobs.map((j) => [j.jobId, j]));
    expect(by['demo-job-1']).toMatchObject({ outcome: 'printed', receipt: 'missing' });
    expect(by['demo-job-2']).toMatchObject({ outcome: 'printed', receipt: 'verified' });
    expect(by['demo-job-3']).toMatchObject({ outcome: 'printed', receipt: 'missing' });
    expect(r.summary).toMatchObject({ sent: 3, printed: 3, receiptsVerified: 1, resultsRejected: 1, contradicted: 0 });
  }, 180_000);

  it('a printer that never confirms: every job uncertain (the device says it does not know), no receipt, exit 1', async () => {
    const r = await runJson({ stack: { faults: { neverConfirm: true }, confirmTimeoutMs: 3000 } });
    expect(r.code, r.lines.join('\n')).toBe(1);
    for (const j of r.jobs) expect(j, j.jobId).toMatchObject({ reported: 'uncertain', receipt: 'missing', contradicted: false });
    expect(r.summary).toMatchObject({ sent: 3, uncertain: 3, receiptsVerified: 0 });
  }, 180_000);

  it('--broker URL: the jobs go through a broker the demo does not own (its results seen there by another subscriber)', async () => {
    const broker = await startEmbeddedBroker();
    const sink = await CloudSink.connect({ url: broker.url });
    try {
      const r = await runJson({ brokerUrl: broker.url });
      expect(r.code, r.lines.join('\n')).toBe(0);
      expect(r.summary).toMatchObject({ sent: 3, printed: 3, receiptsVerified: 3 });
      const seen = new Set(
        sink
          .commandResults()
          .map((x) => x.printJobStatus?.jobId)
          .filter(Boolean),
      );
      expect([...seen].sort()).toEqual(['demo-job-1', 'demo-job-2', 'demo-job-3']);
    } finally {
      await sink.close();
      await broker.close();
    }
  }, 180_000);
});
