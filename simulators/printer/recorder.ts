/**
 * The simulated printer's output tray: each job's bytes streamed to DIR/job-N.bin (never held in
 * memory), and DIR/jobs.json, an index of every job (rewritten atomically at each job's begin and end).
 *
 * DIR may hold a previous run's jobs: numbering goes on after them, and a job the previous run left
 * 'receiving' (it was killed mid-job) is marked 'aborted', which `recovered` reports. A jobs.json that
 * cannot be read is an error (SIM_JOBS_CORRUPT), never silently started over.
 */
import { createWriteStream, existsSync, mkdirSync, readFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { TallyboxError } from '../../src/util/errors.js';
import { writePrivateFileAtomic } from '../../src/util/private-fs.js';
import type { JobRecorder, RecordedJob, RecordedJobState, RecordedJobWriter } from './types.js';

const STATES: readonly RecordedJobState[] = ['receiving', 'completed', 'aborted', 'canceled'];

function validJob(v: unknown): v is RecordedJob {
  const j = v as RecordedJob;
  return (
    !!j &&
    typeof j === 'object' &&
    Number.isInteger(j.id) &&
    j.id > 0 &&
    (j.protocol === 'raw9100' || j.protocol === 'ipp') &&
    Number.isInteger(j.bytes) &&
    STATES.includes(j.state) &&
    typeof j.file === 'string' &&
    /^job-\d+\.bin$/.test(j.file)
  );
}

export class DirJobRecorder implements JobRecorder {
  readonly dir: string;
  /** Jobs a previous run left 'receiving', now marked 'aborted'. */
  readonly recovered: number[] = [];
  private readonly list: RecordedJob[] = [];
  private nextId = 1;
  private readonly listeners = new Set<(job: RecordedJob) => void>();

  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const index = join(dir, 'jobs.json');
    if (existsSync(index)) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(readFileSync(index, 'utf8'));
      } catch (err) {
        throw new TallyboxError('SIM_JOBS_CORRUPT', `${index} is not valid JSON (${(err as Error).message}); move it away to start a new output directory`);
      }
      const jobs = (parsed as { jobs?: unknown })?.jobs;
      if (!Array.isArray(jobs) || !jobs.every(validJob)) throw new TallyboxError('SIM_JOBS_CORRUPT', `${index} does not hold a valid job list; move it away to start a new output directory`);
      for (const j of jobs) {
        if (j.state === 'receiving') {
          j.state = 'aborted';
          this.recovered.push(j.id);
        }
        this.list.push(j);
        this.nextId = Math.max(this.nextId, j.id + 1);
      }
      if (this.recovered.length > 0) this.save();
    }
  }

  jobs(): RecordedJob[] {
    return this.list.map((j) => ({ ...j }));
  }

  /** Called with each job as it ends (tests wait on it). Returns the unsubscribe. */
  onEnd(fn: (job: RecordedJob) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  begin(meta: { protocol: RecordedJob['protocol']; name?: string; format?: string; copies?: number }): RecordedJobWriter {
    const id = this.nextId++;
    const job: RecordedJob = { id, protocol: meta.protocol, name: meta.name, format: meta.format, copies: meta.copies ?? 1, bytes: 0, state: 'receiving', file: `job-${id}.bin` };
    this.list.push(job);
    this.save();
    const stream = createWriteStream(join(this.dir, job.file), { flags: 'wx', mode: 0o600 });
    return new FileJobWriter(
      job,
      stream,
      () => this.save(),
      (j) => {
        for (const fn of this.listeners) fn({ ...j });
      },
    );
  }

  private save(): void {
    writePrivateFileAtomic(join(this.dir, 'jobs.json'), JSON.stringify({ jobs: this.list }, null, 1) + '\n');
  }
}

class FileJobWriter implements RecordedJobWriter {
  private error: Error | undefined;
  private ended = false;

  constructor(
    private readonly job: RecordedJob,
    private readonly stream: WriteStream,
    private readonly save: () => void,
    private readonly notify: (job: RecordedJob) => void,
  ) {
    stream.on('error', (err) => {
      this.error = err;
    });
  }

  get id(): number {
    return this.job.id;
  }

  write(chunk: Uint8Array): boolean {
    if (this.ended) throw new Error(`job ${this.job.id} already ended`);
    this.job.bytes += chunk.length;
    return this.stream.write(chunk);
  }

  drained(): Promise<void> {
    if (!this.stream.writableNeedDrain || this.error) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.stream.off('drain', done);
        this.stream.off('error', done);
        resolve();
      };
      this.stream.once('drain', done);
      this.stream.once('error', done);
    });
  }

  async end(state: Exclude<RecordedJobState, 'receiving'>): Promise<RecordedJob> {
    if (this.ended) return { ...this.job };
    this.ended = true;
    await new Promise<void>((resolve) => {
      if (this.error) return resolve();
      this.stream.end(() => resolve());
      this.stream.once('error', () => resolve());
    });
    // A disk error means the recording is not what the printer received: say so in the index.
    this.job.state = this.error ? 'aborted' : state;
    this.save();
    this.notify(this.job);
    return { ...this.job };
  }
}
