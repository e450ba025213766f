/**
 * Contract between the printer simulator's parts: the raw 9100/PJL server, the IPP server, the job
 * recorder and the fault switches. `tallybox-sim printer` composes them; tests use them in-process.
 */

/** Faults the simulator can be told to show (on the command line, or at run time through its control). */
export interface PrinterFaults {
  /** Connections refused (the printer is switched off or unplugged from the LAN). */
  offline: boolean;
  /** A connection is already in use: new ones are refused (a raw 9100 port takes one job at a time). */
  busy: boolean;
  /** Bytes per second the printer reads at (0 = as fast as it can). */
  slowBytesPerSec: number;
  /** After this many bytes of a job the printer runs out of paper: it stops reading, state 'stopped', reason 'media-empty'. 0 = never. */
  paperOutAfterBytes: number;
  /** Close the connection after this many bytes of a job. 0 = never. */
  closeAfterBytes: number;
  /** Never report completion (no PJL USTATUS JOB END, IPP job stays 'processing'). */
  neverConfirm: boolean;
}

export const NO_FAULTS: PrinterFaults = { offline: false, busy: false, slowBytesPerSec: 0, paperOutAfterBytes: 0, closeAfterBytes: 0, neverConfirm: false };

export type RecordedJobState = 'receiving' | 'completed' | 'aborted' | 'canceled';

/** One job as the simulated printer received it; its bytes are in `file` under the recorder's directory. */
export interface RecordedJob {
  id: number;
  protocol: 'raw9100' | 'ipp';
  /** The job name the client gave (PJL JOB NAME / IPP job-name); never shown in logs. */
  name: string | undefined;
  format: string | undefined;
  copies: number;
  bytes: number;
  state: RecordedJobState;
  file: string;
}

/** Where the simulator keeps what it received; the servers call it, tests read it. */
export interface JobRecorder {
  begin(meta: { protocol: RecordedJob['protocol']; name?: string; format?: string; copies?: number }): RecordedJobWriter;
  jobs(): RecordedJob[];
}

export interface RecordedJobWriter {
  readonly id: number;
  /** false: the disk is behind; a server stops reading its client until `drained()` resolves (streamed, never buffered whole). */
  write(chunk: Uint8Array): boolean;
  drained(): Promise<void>;
  end(state: Exclude<RecordedJobState, 'receiving'>): Promise<RecordedJob>;
}

/** What both servers share: the recorder, the live fault switches and the printer state derived from them. */
export interface PrinterSimContext {
  recorder: JobRecorder;
  faults: PrinterFaults;
  /** 'stopped' with 'media-empty' after a paper-out until `resume()`; 'processing' while a job is received. */
  status(): { state: 'idle' | 'processing' | 'stopped'; reasons: string[] };
  /**
   * The parts below are implemented by `SimPrinterContext` (context.ts); optional so that a test's own
   * context literal still type-checks. A server calls `paperOut()` when a job hits paperOutAfterBytes
   * (status 'stopped'/'media-empty' until `resume()`), `jobStarted()`/`jobEnded()` around each job
   * (status 'processing'), and subscribes to `onChange` to re-apply faults changed at run time
   * (stop/start listening, resume a job paused by a paper-out).
   */
  paperOut?(): void;
  resume?(): void;
  jobStarted?(): void;
  jobEnded?(): void;
  onChange?(fn: () => void): () => void;
}

/** A started server: the IPP one is `startIppServer(ctx, { host, port })` in ipp-server.ts, the raw one `startRawServer(ctx, { host, port })` in raw-server.ts. */
export interface StartedServer {
  readonly port: number;
  close(): Promise<void>;
}
