/**
 * Feedback on the face module's display and LED/buzzer: best effort, off the
 * punch's path (a display that does not answer never costs a punch). Names
 * shown here stay on the local UART and are never logged.
 */
import { tallybox } from '../../gen/tallybox.js';
import type { FaceModule } from '../../../firmware-bridge/devices.js';
import type { Logger } from '../../util/log.js';
import { errorCode } from '../kit/supervisor.js';
import type { M2Vault } from './types.js';

const BridgeLedColour = tallybox.v1.BridgeLedColour;

export class M2Feedback {
  constructor(
    private readonly o: {
      module: FaceModule;
      vault: Pick<M2Vault, 'getSubject'>;
      log: Logger;
      showFirstName: boolean;
      feedbackMs: number;
      /** Wall clock: the time shown to the person. */
      wallClock: () => number;
    },
  ) {}

  async welcome(orgId: string, subjectId: string): Promise<void> {
    let line1 = 'Welcome';
    if (this.o.showFirstName) {
      try {
        const first = (await this.o.vault.getSubject(orgId, subjectId)).displayName.trim().split(/\s+/)[0];
        if (first) line1 = `Welcome ${first}`.slice(0, 32);
      } catch {
        // A quarantined name: the generic greeting.
      }
    }
    const d = new Date(this.o.wallClock());
    const hhmm = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
    this.show(true, line1, `Recorded ${hhmm}`);
  }

  show(ok: boolean, line1: string, line2 = ''): void {
    const m = this.o.module;
    if (m.status !== 'ready') return;
    const ms = this.o.feedbackMs;
    const send = async () => {
      await m.displayText({ line1, line2, durationMs: ms });
      await m.indicator({ led: ok ? BridgeLedColour.BRIDGE_LED_COLOUR_GREEN : BridgeLedColour.BRIDGE_LED_COLOUR_RED, ledMs: Math.min(ms, 1000), beeps: ok ? 1 : 2, beepMs: ok ? 80 : 150 });
    };
    send().catch((err: unknown) => this.o.log.debug({ event: 'm2_feedback_failed', code: errorCode(err) }, 'display/indicator not updated'));
  }
}
