/**
 * The face-module simulator: the device side of the bridge protocol
 * (firmware-bridge/bridge/device.ts) in front of a synthetic population.
 * Control it in-process (FaceModuleSim methods) or over HTTP (control.ts).
 */
import { tallybox } from '../../src/gen/tallybox.js';
import { BridgeDevice } from '../../firmware-bridge/bridge/device.js';
import { DEFAULT_MAX_FRAME, PROTOCOL_MAX, PROTOCOL_MIN, type BridgeFrame } from '../../firmware-bridge/bridge/codec.js';
import type { ByteTransport } from '../../firmware-bridge/transport/types.js';
import { Population, type Presentation } from './population.js';

const pb = tallybox.v1;
export const SIM_MODEL = 'tallybox-sim-face';
export const SIM_FIRMWARE = '1.0.0-sim';

export interface FaceModuleState {
  population: { size: number; dim: number; seed: number };
  linked: boolean;
  enrolling: { total: number; done: number } | null;
  display: { line1: string; line2: string };
  led: string;
  relay: boolean;
  tamperOpen: boolean;
  counters: { presented: number; spoofs: number; requests: number; rejectedFrames: number };
}

export interface FaceModuleSimOptions {
  transport: ByteTransport;
  population: Population;
  /** Feature extractor id reported in BridgeHelloAck. */
  featureModel?: string;
}

export class FaceModuleSim {
  readonly population: Population;
  readonly device: BridgeDevice;
  private readonly featureModel: string;
  private captureId = 0;
  private enrolment: { total: number; done: number; timer: NodeJS.Timeout } | null = null;
  private readonly st: FaceModuleState;
  /** Hung: powered, port open, answering nothing (a crashed module firmware). */
  private hung = false;

  constructor(opts: FaceModuleSimOptions) {
    this.population = opts.population;
    this.featureModel = opts.featureModel ?? `sim-d${opts.population.dim}-s${opts.population.seed}`;
    this.device = new BridgeDevice({ transport: opts.transport, maxFrame: DEFAULT_MAX_FRAME });
    this.st = {
      population: { size: opts.population.size, dim: opts.population.dim, seed: opts.population.seed },
      linked: false,
      enrolling: null,
      display: { line1: '', line2: '' },
      led: 'off',
      relay: false,
      tamperOpen: false,
      counters: { presented: 0, spoofs: 0, requests: 0, rejectedFrames: 0 },
    };
    this.device.on('request', (f) => void this.onRequest(f).catch(() => undefined));
    this.device.on('reject', () => this.st.counters.rejectedFrames++);
  }

  state(): FaceModuleState {
    return structuredClone({ ...this.st, enrolling: this.enrolment ? { total: this.enrolment.total, done: this.enrolment.done } : null });
  }

  /** Person `person` steps in front of the camera (live). */
  present(person: number): Promise<void> {
    this.st.counters.presented++;
    return this.emitCapture(this.population.present(person));
  }

  /** A photo or screen of `person` is held up: features may match, liveness fails. */
  spoof(person: number): Promise<void> {
    this.st.counters.spoofs++;
    return this.emitCapture(this.population.spoof(person));
  }

  tamper(open: boolean): Promise<void> {
    this.st.tamperOpen = open;
    return this.device.send({ tamper: { open } });
  }

  keypad(keys: string): Promise<void> {
    return this.device.send({ keypad: { keys } });
  }

  /** Hang (true): requests are received and never answered, no events are sent; false: answering again. */
  hang(on = true): void {
    this.hung = on;
  }

  close(): void {
    if (this.enrolment) clearTimeout(this.enrolment.timer);
    this.enrolment = null;
  }

  private async emitCapture(p: Presentation): Promise<void> {
    if (this.hung) return;
    const feature = {
      vector: Array.from(p.vector),
      dim: p.vector.length,
      quality: p.quality,
      liveness: p.liveness,
      captureId: ++this.captureId,
    };
    const e = this.enrolment;
    if (e) {
      e.done++;
      if (e.done >= e.total) {
        clearTimeout(e.timer);
        this.enrolment = null;
      }
      await this.device.send({ enrolCapture: { index: e.done, total: e.total, feature: { ...feature, purpose: pb.BridgeCapturePurpose.BRIDGE_CAPTURE_PURPOSE_ENROL } } });
      return;
    }
    await this.device.send({ faceFeature: { ...feature, purpose: pb.BridgeCapturePurpose.BRIDGE_CAPTURE_PURPOSE_IDENTIFY } });
  }

  private async onRequest(f: BridgeFrame): Promise<void> {
    this.st.counters.requests++;
    if (this.hung) return;
    const ok = { ack: { status: pb.BridgeStatus.BRIDGE_STATUS_OK } };
    switch (f.body) {
      case 'hello': {
        const h = f.hello!;
        const lo = Math.max(PROTOCOL_MIN, h.hostProtocolMin ?? 0);
        const hi = Math.min(PROTOCOL_MAX, h.hostProtocolMax ?? 0);
        this.st.linked = lo <= hi;
        return this.device.reply(f.seq, { helloAck: { protocol: lo <= hi ? hi : 0, firmwareVersion: SIM_FIRMWARE, model: SIM_MODEL, featureDim: this.population.dim, featureModel: this.featureModel, maxFrame: DEFAULT_MAX_FRAME } });
      }
      case 'heartbeat':
        return this.device.reply(f.seq, { heartbeat: { uptimeMs: Math.round(process.uptime() * 1000) } });
      case 'displayText':
        this.st.display = { line1: f.displayText?.line1 ?? '', line2: f.displayText?.line2 ?? '' };
        return this.device.reply(f.seq, ok);
      case 'indicator':
        this.st.led = (pb.BridgeLedColour[f.indicator?.led ?? 0] ?? 'off').replace('BRIDGE_LED_COLOUR_', '').toLowerCase().replace('unspecified', 'off');
        return this.device.reply(f.seq, ok);
      case 'relay':
        this.st.relay = !!f.relay?.energised;
        if (f.relay?.pulseMs) setTimeout(() => (this.st.relay = false), f.relay.pulseMs).unref();
        return this.device.reply(f.seq, ok);
      case 'enrolStart': {
        const n = f.enrolStart?.captures ?? 0;
        if (n < 1 || n > 10) return this.device.reply(f.seq, { ack: { status: pb.BridgeStatus.BRIDGE_STATUS_BAD_REQUEST, detail: `captures ${n} not in 1..10` } });
        if (this.enrolment) return this.device.reply(f.seq, { ack: { status: pb.BridgeStatus.BRIDGE_STATUS_BUSY, detail: 'already enrolling' } });
        const timer = setTimeout(() => {
          const e = this.enrolment;
          this.enrolment = null;
          if (e) void this.device.send({ enrolCapture: { index: e.done + 1, total: e.total, aborted: true } }).catch(() => undefined);
        }, f.enrolStart?.timeoutMs || 30_000);
        timer.unref();
        this.enrolment = { total: n, done: 0, timer };
        return this.device.reply(f.seq, ok);
      }
      default:
        return this.device.reply(f.seq, { ack: { status: pb.BridgeStatus.BRIDGE_STATUS_UNSUPPORTED, detail: `${f.body ?? 'empty'} is not a request` } });
    }
  }
}
