/**
 * A small typed client of the lab's control API (openapi.yaml), for scripts
 * and the lab's own tests. Errors come back as LabApiError with the server's
 * code and the HTTP status.
 */
import type { CommandOutcome, DeviceView, PersonView, PunchView } from './lab.js';
import type { LabAction, RecordedAction } from './actions.js';
import type { LabPrinterFault, LabPrintJobView } from './kinds/types.js';

export type PrinterView = NonNullable<DeviceView['printer']>;
export interface PrintResult {
  result: CommandOutcome;
  job: LabPrintJobView;
}

export class LabApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = 'LabApiError';
  }
}

export type PresentResult = { outcome: 'punch'; seq: number } | { outcome: 'no-match' | 'no-punch' };

export interface LabEventMessage {
  id: number;
  type: string;
  data: Record<string, unknown>;
}

export class LabClient {
  constructor(readonly url: string) {}

  async #call<T>(method: 'GET' | 'POST', path: string, body?: Record<string, unknown>): Promise<T> {
    const r = await fetch(`${this.url}${path}`, {
      method,
      ...(body ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
    });
    const j = (await r.json()) as T & { error?: { code: string; message: string } };
    if (!r.ok) throw new LabApiError(r.status, j.error?.code ?? String(r.status), j.error?.message ?? r.statusText);
    return j;
  }

  lab(): Promise<{ site: string; region: string; seed: number; broker: string; startedAt: string; dir: string; configSha256: string; devices: number; people: number }> {
    return this.#call('GET', '/api/lab');
  }
  async devices(): Promise<DeviceView[]> {
    return (await this.#call<{ devices: DeviceView[] }>('GET', '/api/devices')).devices;
  }
  device(name: string): Promise<DeviceView> {
    return this.#call('GET', `/api/devices/${encodeURIComponent(name)}`);
  }
  async people(): Promise<PersonView[]> {
    return (await this.#call<{ people: PersonView[] }>('GET', '/api/people')).people;
  }
  person(id: string): Promise<PersonView> {
    return this.#call('GET', `/api/people/${encodeURIComponent(id)}`);
  }
  async punches(): Promise<PunchView[]> {
    return (await this.#call<{ punches: PunchView[] }>('GET', '/api/punches')).punches;
  }
  actions(): Promise<{ seed: number; actions: RecordedAction[] }> {
    return this.#call('GET', '/api/actions');
  }
  present(device: string, person: string, method: 'finger' | 'face' | 'card' | 'phone'): Promise<PresentResult> {
    return this.#call('POST', `/api/devices/${encodeURIComponent(device)}/present`, { person, method });
  }
  async uplink(device: string, mode: 'ok' | 'cut' | 'blackhole'): Promise<DeviceView> {
    return (await this.#call<{ device: DeviceView }>('POST', `/api/devices/${encodeURIComponent(device)}/uplink`, { mode })).device;
  }
  async plug(device: string, peripheral: string, plugged: boolean): Promise<DeviceView> {
    return (await this.#call<{ device: DeviceView }>('POST', `/api/devices/${encodeURIComponent(device)}/peripherals/${encodeURIComponent(peripheral)}`, { plugged })).device;
  }
  async disk(device: string, full: boolean): Promise<DeviceView> {
    return (await this.#call<{ device: DeviceView }>('POST', `/api/devices/${encodeURIComponent(device)}/disk`, { full })).device;
  }
  async clock(device: string, offsetMs: number): Promise<DeviceView> {
    return (await this.#call<{ device: DeviceView }>('POST', `/api/devices/${encodeURIComponent(device)}/clock`, { offsetMs })).device;
  }
  async kill(device: string): Promise<DeviceView> {
    return (await this.#call<{ device: DeviceView }>('POST', `/api/devices/${encodeURIComponent(device)}/agent/kill`)).device;
  }
  async restart(device: string): Promise<DeviceView> {
    return (await this.#call<{ device: DeviceView }>('POST', `/api/devices/${encodeURIComponent(device)}/agent/restart`)).device;
  }
  /** Send a signed PrintJob to a p1 device (a generated document, inline or fetched over HTTPS); resolves with the command's first result. */
  print(device: string, job: { source?: 'inline' | 'fetch'; pages?: number } = {}): Promise<PrintResult> {
    return this.#call('POST', `/api/devices/${encodeURIComponent(device)}/print-jobs`, job);
  }
  /** The printer and every job sent to it: the device's report next to the evidence (recording SHA-256, verified receipt). */
  printJobs(device: string): Promise<{ printer: PrinterView; jobs: LabPrintJobView[] }> {
    return this.#call('GET', `/api/devices/${encodeURIComponent(device)}/print-jobs`);
  }
  /** Switch a printer fault on a p1 device (offline, paper-out [after N bytes], busy, never-confirm, clear). */
  async printerFault(device: string, fault: LabPrinterFault, on = true, afterBytes?: number): Promise<DeviceView> {
    return (await this.#call<{ device: DeviceView }>('POST', `/api/devices/${encodeURIComponent(device)}/printer`, { fault, on, ...(afterBytes !== undefined ? { afterBytes } : {}) })).device;
  }
  async enrol(person: string, device?: string): Promise<CommandOutcome[]> {
    return (await this.#call<{ results: CommandOutcome[] }>('POST', '/api/commands/enrol', { person, ...(device ? { device } : {}) })).results;
  }
  async erase(person: string): Promise<CommandOutcome[]> {
    return (await this.#call<{ results: CommandOutcome[] }>('POST', '/api/commands/erase', { person })).results;
  }
  async withdraw(org: string): Promise<CommandOutcome[]> {
    return (await this.#call<{ results: CommandOutcome[] }>('POST', '/api/commands/withdraw', { org })).results;
  }

  /**
   * Follow the event stream (SSE) until `until` returns true for an event or
   * the timeout; resolves with that event. Earlier events (since `sinceId`) count too.
   */
  async waitForEvent(until: (e: LabEventMessage) => boolean, opts: { timeoutMs?: number; sinceId?: number } = {}): Promise<LabEventMessage> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), opts.timeoutMs ?? 30_000);
    try {
      const r = await fetch(`${this.url}/api/events?since=${opts.sinceId ?? 0}`, { signal: ctl.signal });
      const reader = r.body!.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error('the event stream ended');
        buf += dec.decode(value, { stream: true });
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const f: Record<string, string> = {};
          for (const line of block.split('\n')) {
            const i = line.indexOf(': ');
            if (i > 0) f[line.slice(0, i)] = line.slice(i + 2);
          }
          if (!f.event || !f.data) continue;
          const e = { id: Number(f.id), type: f.event, data: JSON.parse(f.data) as Record<string, unknown> };
          if (until(e)) return e;
        }
      }
    } catch (err) {
      if (ctl.signal.aborted) throw new Error(`no matching lab event within ${opts.timeoutMs ?? 30_000} ms`);
      throw err;
    } finally {
      clearTimeout(timer);
      ctl.abort(); // close this stream: the server would otherwise keep writing every later event to it
      ctl.abort();
    }
  }
}

export type { LabAction, RecordedAction, DeviceView, PersonView, PunchView, CommandOutcome, LabPrintJobView, LabPrinterFault };
