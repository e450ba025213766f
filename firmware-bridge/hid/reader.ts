/**
 * A keyboard-wedge card reader: reports in, card numbers out to a callback.
 * The number goes straight to the caller (which turns it into an HMAC lookup
 * key); this module neither stores nor logs it.
 */
import { TallyboxError } from '../../src/util/errors.js';
import type { Logger } from '../../src/util/log.js';
import type { CardReader } from '../devices.js';
import { NodeHidTransport, type HidReportTransport } from './transport.js';
import { WedgeDecoder, type WedgeDecoderOptions } from './keyboard.js';

export interface CardReaderConfig {
  vendorId: number;
  productId: number;
  path?: string;
  reportId?: 'auto' | 'none' | number;
  interKeyTimeoutMs?: number;
}

export interface HidCardReaderOptions extends Omit<WedgeDecoderOptions, 'now'> {
  transport: HidReportTransport;
  /** Called once per card read. Personal data: do not log the argument. */
  onCard: (card: string) => void;
  logger?: Logger;
}

export class HidCardReader implements CardReader {
  readonly transport: HidReportTransport;
  readonly stats = { reads: 0, discarded: 0 };
  private readonly decoder: WedgeDecoder;
  private readonly log: Logger | undefined;
  private readonly onReport = (r: Buffer) => this.decoder.push(r);

  constructor(opts: HidCardReaderOptions) {
    this.transport = opts.transport;
    this.log = opts.logger;
    this.decoder = new WedgeDecoder(opts);
    this.decoder.on('card', (card) => {
      this.stats.reads++;
      this.log?.debug({ length: card.length }, 'card read');
      opts.onCard(card);
    });
    this.decoder.on('discard', (reason) => {
      this.stats.discarded++;
      this.log?.debug({ reason }, 'card reader input discarded');
    });
  }

  async start(): Promise<void> {
    this.transport.on('report', this.onReport);
    await this.transport.open();
  }

  async stop(): Promise<void> {
    this.transport.off('report', this.onReport);
    await this.transport.close();
  }

  get description(): string {
    return this.transport.description;
  }

  /** Presence: the transport's own probe, or at least its status. */
  async probe(): Promise<void> {
    if (this.transport.probe) return this.transport.probe();
    if (this.transport.status !== 'open') throw new TallyboxError('HID_NOT_OPEN', `card reader ${this.transport.description} is ${this.transport.status}`);
  }

  /** The transport closed without being asked (unplugged, read error). */
  onLost(fn: (reason: Error) => void): () => void {
    const on = (s: string, reason?: Error) => {
      if (s === 'closed' && reason) fn(reason);
    };
    this.transport.on('status', on);
    return () => this.transport.off('status', on);
  }
}

/**
 * The reader for a config section, or null when none is configured (then
 * node-hid is never imported).
 */
export function createCardReader(opts: { config: CardReaderConfig | undefined | null; onCard: (card: string) => void; logger?: Logger }): HidCardReader | null {
  const c = opts.config;
  if (!c) return null;
  const transport = new NodeHidTransport({ vendorId: c.vendorId, productId: c.productId, ...(c.path ? { path: c.path } : {}) });
  return new HidCardReader({
    transport,
    onCard: opts.onCard,
    ...(c.reportId !== undefined ? { reportId: c.reportId } : {}),
    ...(c.interKeyTimeoutMs !== undefined ? { interKeyTimeoutMs: c.interKeyTimeoutMs } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
}
