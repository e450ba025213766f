/**
 * One explicit connection state, with the transitions allowed between states.
 * An illegal transition is a bug and throws, rather than leaving flags that
 * disagree with each other.
 */
export type LinkState = 'idle' | 'connecting' | 'online' | 'backoff' | 'closing' | 'closed';

const ALLOWED: Readonly<Record<LinkState, readonly LinkState[]>> = {
  idle: ['connecting', 'closing'],
  connecting: ['online', 'backoff', 'closing'],
  online: ['backoff', 'closing'],
  backoff: ['connecting', 'closing'],
  closing: ['closed'],
  closed: [],
};

export class LinkStateMachine {
  private current: LinkState = 'idle';

  constructor(private readonly onChange: (from: LinkState, to: LinkState) => void = () => undefined) {}

  get state(): LinkState {
    return this.current;
  }

  to(next: LinkState): void {
    if (!ALLOWED[this.current].includes(next)) {
      throw new Error(`illegal link transition ${this.current} → ${next}`);
    }
    const from = this.current;
    this.current = next;
    this.onChange(from, next);
  }

  can(next: LinkState): boolean {
    return ALLOWED[this.current].includes(next);
  }
}

/** Full-jitter exponential backoff: uniform in [0, min(max, base·2^attempt)], at least `min`. */
export function backoffDelay(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.max(minMs, Math.floor(random() * cap));
}
