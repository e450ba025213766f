/**
 * A fingerprint module in the lab: the R30x simulator on a pseudo-terminal
 * the agent opens as `m1.port`, and the simulated person's hand on it.
 * Presenting places the finger, waits for the module's search answer (so the
 * lab knows a no-match at once), then lifts it and waits until the agent has
 * seen the lift (so the next presentation counts). Enrolling follows the
 * terminal's prompts the way a person would: lift after each capture, place
 * again once the module reports the finger gone.
 */
import { join } from 'node:path';
import { Confirmation } from '../../../firmware-bridge/r30x/constants.js';
import { startFingerprintSimulator, type FingerprintSimulator } from '../../fingerprint/simulator.js';
import { traitMissing } from './errors.js';
import type { EnrolOutcome, LabPerson, PeripheralView, PresentOutcome } from './types.js';

type Listener = (instruction: string, confirmation: number) => void;

export class FingerprintPart {
  readonly link: string;
  readonly #sim: FingerprintSimulator;
  readonly #listeners = new Set<Listener>();
  #plugged = true;

  private constructor(sim: FingerprintSimulator, link: string) {
    this.#sim = sim;
    this.link = link;
    sim.device.onCommand = (ins, conf) => {
      for (const l of [...this.#listeners]) l(ins, conf);
    };
  }

  static async start(opts: { dir: string; seed: number; capacity: number }): Promise<FingerprintPart> {
    const link = join(opts.dir, 'ttyR30x');
    const sim = await startFingerprintSimulator({ link, control: false, capacity: opts.capacity, seed: `tallybox-lab-${opts.seed}` });
    return new FingerprintPart(sim, link);
  }

  /** The agent's m1: section for this module. */
  agentConfig(repeatWindowSec: number): Record<string, unknown> {
    return { port: this.link, timeoutMs: 1500, pollMs: 50, repeatWindowSec, enrolTimeoutMs: 30_000, backoff: { minMs: 100, maxMs: 1000 } };
  }

  view(): PeripheralView {
    const s = this.#sim.state();
    return { name: 'fingerprint', plugged: this.#plugged, detail: `R30x sim, ${s.templateCount} templates, plug ${s.plug}` };
  }

  #next(match: (ins: string, conf: number) => boolean, timeoutMs: number): Promise<{ instruction: string; confirmation: number } | null> {
    return new Promise((resolve) => {
      const l: Listener = (instruction, confirmation) => {
        if (!match(instruction, confirmation)) return;
        done({ instruction, confirmation });
      };
      const timer = setTimeout(() => done(null), timeoutMs);
      const done = (v: { instruction: string; confirmation: number } | null) => {
        clearTimeout(timer);
        this.#listeners.delete(l);
        resolve(v);
      };
      this.#listeners.add(l);
    });
  }

  async present(person: LabPerson): Promise<PresentOutcome> {
    if (person.finger === undefined) throw traitMissing(person.id, 'finger');
    const searched = this.#next((ins) => ins === 'HighSpeedSearch' || ins === 'Search', 15_000);
    this.#sim.device.placeFinger({ person: person.id, finger: person.finger });
    const r = await searched;
    const lifted = this.#next((ins, conf) => ins === 'GenImg' && conf === Confirmation.NO_FINGER, 5000);
    this.#sim.device.liftFinger();
    await lifted;
    return r && r.confirmation === Confirmation.OK ? 'sent' : 'no-match';
  }

  async enrol(person: LabPerson, done: Promise<EnrolOutcome>): Promise<void> {
    if (person.finger === undefined) throw traitMissing(person.id, 'finger');
    const ref = { person: person.id, finger: person.finger };
    const device = this.#sim.device;
    let lifted = false;
    let stored = false;
    const l: Listener = (ins, conf) => {
      // Stored: the enrolment is over; a finger left on would be identified (a punch) before the role's log line arrives.
      if (ins === 'Store') {
        stored = true;
        device.liftFinger();
      } else if (stored) return;
      else if (ins === 'Img2Tz') {
        device.liftFinger();
        lifted = true;
      } else if (ins === 'GenImg' && conf === Confirmation.NO_FINGER && lifted) {
        device.placeFinger(ref);
        lifted = false;
      }
    };
    this.#listeners.add(l);
    device.placeFinger(ref);
    try {
      await done;
    } finally {
      this.#listeners.delete(l);
      device.liftFinger();
    }
  }

  async setPlugged(plugged: boolean): Promise<void> {
    if (plugged) await this.#sim.replug();
    else await this.#sim.unplug('close');
    this.#plugged = plugged;
  }

  close(): Promise<void> {
    return this.#sim.close();
  }
}
