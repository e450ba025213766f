/**
 * Host-side R30x driver: one command in flight at a time (a promise queue),
 * each reply awaited with a timeout, refusals as typed R30xError. The byte
 * transport is injected, so the same driver runs on /dev/ttyS1, a socat pty
 * or a mock binding.
 *
 * Outcomes the module reports as confirmation codes (no finger, not found)
 * reject with R30xError whose `code` names them; callers branch on `code`.
 */
import { EventEmitter } from 'node:events';
import { isTallyboxError } from '../../src/util/errors.js';
import { SerialQueue } from '../../src/util/serial-queue.js';
import type { ByteTransport, TransportStatus } from '../transport/types.js';
import { R30xParser, encodePacket, type FrameReject, type Packet } from './codec.js';
import { Confirmation, DEFAULT_ADDRESS, Instruction, PAGES_PER_INDEX_TABLE, Pid, TEMPLATE_SIZE, packetSizeFromCode, type InstructionName } from './constants.js';
import { R30xError } from './errors.js';
import { Command, ackPayloadLength, decodeIndexTable, decodeSearchPayload, decodeSysPara, splitData, type SearchResult, type SysPara } from './messages.js';

export type CharBufferId = 1 | 2;

export interface R30xDriverOptions {
  transport: ByteTransport;
  /** Module address; default FFFFFFFF. Frames from other addresses are ignored. */
  address?: number;
  /** Password for vfyPwd() when none is passed; default 0. */
  password?: number;
  /** How long to wait for each reply packet; default 1500 ms. */
  timeoutMs?: number;
  /** Bytes per data packet; default learned from ReadSysPara on first need. */
  packetSize?: number;
  /** Largest frame LEN accepted by the parser; default 512. */
  maxFrameLength?: number;
  /** Largest UpChar payload accepted; default 4096 (a template is 512). */
  maxDataBytes?: number;
}

export interface R30xDriverEvents {
  /** A frame-shaped run of bytes was refused (bad checksum, LEN, PID); parsing went on. */
  'error-frame': [reject: FrameReject];
  /** A well-formed packet nobody asked for (late reply, other address, echo). */
  'unexpected-packet': [packet: Packet, why: string];
}

type Waiter = (result: Packet | R30xError) => void;

const INBOX_LIMIT = 64;

export class R30xDriver extends EventEmitter<R30xDriverEvents> {
  readonly transport: ByteTransport;
  readonly address: number;
  readonly timeoutMs: number;
  readonly #password: number;
  readonly #maxDataBytes: number;
  readonly #parser: R30xParser;
  #packetSize: number | undefined;
  readonly #queue = new SerialQueue();
  #inFlight: InstructionName | null = null;
  #inbox: Packet[] = [];
  #waiter: Waiter | null = null;
  #closed = false;
  readonly #onData = (chunk: Buffer) => this.#parser.write(chunk);
  readonly #onStatus = (status: TransportStatus) => {
    if (status === 'closed') this.#fail(new R30xError({ code: 'DISCONNECTED', message: `R30x link ${this.transport.description} closed`, ...this.#instr() }));
  };

  constructor(opts: R30xDriverOptions) {
    super();
    this.transport = opts.transport;
    this.address = opts.address ?? DEFAULT_ADDRESS;
    this.timeoutMs = opts.timeoutMs ?? 1500;
    this.#password = opts.password ?? 0;
    this.#packetSize = opts.packetSize;
    this.#maxDataBytes = opts.maxDataBytes ?? 4096;
    this.#parser = new R30xParser({ maxLen: opts.maxFrameLength ?? 512 });
    this.#parser.on('data', (p: Packet) => this.#onPacket(p));
    this.#parser.on('error-frame', (r: FrameReject) => this.emit('error-frame', r));
    this.transport.on('data', this.#onData);
    this.transport.on('status', this.#onStatus);
  }

  /** Bytes per data packet, once known (option or ReadSysPara). */
  get packetSize(): number | undefined {
    return this.#packetSize;
  }

  /** Parser counters: packets, rejects, garbage bytes. */
  get stats(): Readonly<{ packets: number; rejects: number; garbageBytes: number }> {
    return this.#parser.decoder.stats;
  }

  /** Open the transport if it is not open. Talks to nobody. */
  async open(): Promise<void> {
    if (this.#closed) throw new R30xError({ code: 'CLOSED', message: 'R30x driver is closed' });
    if (this.transport.status !== 'open') await this.transport.open();
  }

  /** Fail what is queued, detach from the transport and close it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#fail(new R30xError({ code: 'CLOSED', message: 'R30x driver closed', ...this.#instr() }));
    this.transport.off('data', this.#onData);
    this.transport.off('status', this.#onStatus);
    await this.transport.close();
  }

  // ---- instructions -------------------------------------------------------

  vfyPwd(password: number = this.#password): Promise<void> {
    return this.#run('VfyPwd', async () => {
      checkU32('password', password);
      await this.#command('VfyPwd', Command.vfyPwd(password));
    });
  }

  /** Capture an image; rejects NO_FINGER when nothing is on the sensor. */
  genImg(): Promise<void> {
    return this.#run('GenImg', async () => void (await this.#command('GenImg', Command.genImg())));
  }

  img2Tz(bufferId: CharBufferId): Promise<void> {
    return this.#run('Img2Tz', async () => {
      checkBuffer(bufferId);
      await this.#command('Img2Tz', Command.img2Tz(bufferId));
    });
  }

  /** Compare char buffers 1 and 2; rejects NO_MATCH. */
  match(): Promise<number> {
    return this.#run('Match', async () => (await this.#command('Match', Command.match())).readUInt16BE(0));
  }

  /** Combine buffers 1 and 2 into a model (in both buffers); rejects COMBINE_FAILED. */
  regModel(): Promise<void> {
    return this.#run('RegModel', async () => void (await this.#command('RegModel', Command.regModel())));
  }

  store(bufferId: CharBufferId, page: number): Promise<void> {
    return this.#run('Store', async () => {
      checkBuffer(bufferId);
      checkU16('page', page);
      await this.#command('Store', Command.store(bufferId, page));
    });
  }

  loadChar(bufferId: CharBufferId, page: number): Promise<void> {
    return this.#run('LoadChar', async () => {
      checkBuffer(bufferId);
      checkU16('page', page);
      await this.#command('LoadChar', Command.loadChar(bufferId, page));
    });
  }

  /** Read a char buffer out of the module (ack, then data packets 02… 08). */
  upChar(bufferId: CharBufferId): Promise<Buffer> {
    return this.#run('UpChar', async () => {
      checkBuffer(bufferId);
      await this.#command('UpChar', Command.upChar(bufferId));
      const parts: Buffer[] = [];
      let total = 0;
      for (;;) {
        const p = await this.#next('UpChar');
        if (p.pid !== Pid.DATA && p.pid !== Pid.END_DATA) {
          throw this.#protocol('UpChar', `expected a data packet, got PID 0x${p.pid.toString(16).padStart(2, '0')}`);
        }
        total += p.content.length;
        if (total > this.#maxDataBytes) throw this.#protocol('UpChar', `more than ${this.#maxDataBytes} data bytes`);
        parts.push(p.content);
        if (p.pid === Pid.END_DATA) return Buffer.concat(parts);
      }
    });
  }

  /** Write a template into a char buffer (ack, then host data packets sized from ReadSysPara). */
  downChar(bufferId: CharBufferId, data: Uint8Array): Promise<void> {
    return this.#run('DownChar', async () => {
      checkBuffer(bufferId);
      if (data.length === 0 || data.length > this.#maxDataBytes) {
        throw badArgument(`template of ${data.length} bytes is not 1..${this.#maxDataBytes} (normally ${TEMPLATE_SIZE})`);
      }
      const size = this.#packetSize ?? packetSizeFromCode((await this.#readSysPara()).packetSizeCode);
      await this.#command('DownChar', Command.downChar(bufferId));
      const chunks = splitData(data, size);
      for (let i = 0; i < chunks.length; i++) {
        const pid = i === chunks.length - 1 ? Pid.END_DATA : Pid.DATA;
        await this.#write('DownChar', encodePacket({ addr: this.address, pid, content: chunks[i] as Buffer }));
      }
    });
  }

  deletChar(page: number, count = 1): Promise<void> {
    return this.#run('DeletChar', async () => {
      checkU16('page', page);
      checkU16('count', count);
      await this.#command('DeletChar', Command.deletChar(page, count));
    });
  }

  empty(): Promise<void> {
    return this.#run('Empty', async () => void (await this.#command('Empty', Command.empty())));
  }

  /** Search buffer against pages [startPage, startPage+pageCount); rejects NOT_FOUND. */
  search(bufferId: CharBufferId, startPage: number, pageCount: number): Promise<SearchResult> {
    return this.#search('Search', bufferId, startPage, pageCount);
  }

  highSpeedSearch(bufferId: CharBufferId, startPage: number, pageCount: number): Promise<SearchResult> {
    return this.#search('HighSpeedSearch', bufferId, startPage, pageCount);
  }

  templateNum(): Promise<number> {
    return this.#run('TemplateNum', async () => (await this.#command('TemplateNum', Command.templateNum())).readUInt16BE(0));
  }

  /** Used library pages covered by index table `indexPage` (0..3 → pages 0..1023). */
  readIndexTable(indexPage: number): Promise<number[]> {
    return this.#run('ReadIndexTable', async () => {
      if (!Number.isInteger(indexPage) || indexPage < 0 || indexPage > 3) throw badArgument(`index page ${indexPage} is not 0..3`);
      return this.#readIndexTable(indexPage);
    });
  }

  /** Every used page below `librarySize` (default: ReadSysPara's), across the needed index tables. */
  listPages(librarySize?: number): Promise<number[]> {
    return this.#run('ReadIndexTable', async () => {
      const size = librarySize ?? (await this.#readSysPara()).librarySize;
      const tables = Math.min(4, Math.ceil(size / PAGES_PER_INDEX_TABLE));
      const pages: number[] = [];
      for (let t = 0; t < tables; t++) pages.push(...(await this.#readIndexTable(t)));
      return pages.filter((p) => p < size);
    });
  }

  readSysPara(): Promise<SysPara> {
    return this.#run('ReadSysPara', () => this.#readSysPara());
  }

  /** SetSysPara: parameter 4 = baud N, 5 = security level, 6 = packet size code. */
  setSysPara(parameter: number, value: number): Promise<void> {
    return this.#run('SetSysPara', async () => {
      await this.#command('SetSysPara', Command.setSysPara(parameter, value));
      if (parameter === 6) this.#packetSize = packetSizeFromCode(value);
    });
  }

  // ---- machinery ----------------------------------------------------------

  #search(name: 'Search' | 'HighSpeedSearch', bufferId: CharBufferId, startPage: number, pageCount: number): Promise<SearchResult> {
    return this.#run(name, async () => {
      checkBuffer(bufferId);
      checkU16('start page', startPage);
      checkU16('page count', pageCount);
      const content = name === 'Search' ? Command.search(bufferId, startPage, pageCount) : Command.highSpeedSearch(bufferId, startPage, pageCount);
      return decodeSearchPayload(await this.#command(name, content));
    });
  }

  async #readSysPara(): Promise<SysPara> {
    const para = decodeSysPara(await this.#command('ReadSysPara', Command.readSysPara()));
    if (this.#packetSize === undefined && para.packetSizeCode <= 3) this.#packetSize = packetSizeFromCode(para.packetSizeCode);
    return para;
  }

  async #readIndexTable(indexPage: number): Promise<number[]> {
    return decodeIndexTable(indexPage, await this.#command('ReadIndexTable', Command.readIndexTable(indexPage)));
  }

  /**
   * UpImage/DownImage move a raw fingerprint image: the agent never does
   * (privacy rule: only templates, sealed, leave the module). Refused here,
   * before anything is sent, so no caller can do it by accident.
   */
  upImage(): Promise<never> {
    return this.#run('UpImage', async () => {
      throw imageRefused('UpImage');
    });
  }
  downImage(): Promise<never> {
    return this.#run('DownImage', async () => {
      throw imageRefused('DownImage');
    });
  }

  /** Serialise: the module is half duplex and acks carry no sequence number. */
  #run<T>(name: InstructionName, fn: () => Promise<T>): Promise<T> {
    const task = async (): Promise<T> => {
      if (this.#closed) throw new R30xError({ code: 'CLOSED', message: `R30x driver closed before ${name}`, instruction: name });
      this.#inFlight = name;
      this.#inbox = [];
      try {
        return await fn();
      } finally {
        this.#inFlight = null;
        this.#waiter = null;
        this.#inbox = [];
      }
    };
    return this.#queue.run(task);
  }

  /** Send a command packet and return the ack's payload after an OK confirmation. */
  async #command(name: InstructionName, content: Buffer): Promise<Buffer> {
    const code = content[0];
    if (code === Instruction.UpImage || code === Instruction.DownImage) throw imageRefused(name);
    // Anything half-received belongs to an earlier, finished exchange.
    this.#parser.reset();
    this.#inbox = [];
    await this.#write(name, encodePacket({ addr: this.address, pid: Pid.COMMAND, content }));
    const ack = await this.#next(name);
    if (ack.pid !== Pid.ACK) throw this.#protocol(name, `expected an ack (PID 07), got PID 0x${ack.pid.toString(16).padStart(2, '0')}`);
    const confirmation = ack.content[0];
    if (confirmation === undefined) throw this.#protocol(name, 'empty ack');
    if (confirmation !== Confirmation.OK) throw R30xError.fromConfirmation(name, confirmation);
    const payload = ack.content.subarray(1);
    const want = ackPayloadLength(content[0] as number);
    if (payload.length < want) throw this.#protocol(name, `ack payload of ${payload.length} bytes, expected ${want}`);
    return payload;
  }

  async #write(name: InstructionName, bytes: Buffer): Promise<void> {
    if (this.transport.status !== 'open') {
      throw new R30xError({ code: 'NOT_OPEN', instruction: name, message: `R30x ${name}: transport ${this.transport.description} is ${this.transport.status.toUpperCase()}` });
    }
    try {
      await this.transport.write(bytes);
    } catch (err) {
      const code = isTallyboxError(err, 'TRANSPORT_NOT_OPEN') ? 'NOT_OPEN' : 'WRITE_FAILED';
      throw new R30xError({ code, instruction: name, message: `R30x ${name}: ${code} on ${this.transport.description}`, cause: err });
    }
  }

  /** Next packet for the command in flight, or TIMEOUT. */
  #next(name: InstructionName): Promise<Packet> {
    const queued = this.#inbox.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise<Packet>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = null;
        // Whatever arrives half-way now is stale.
        this.#parser.reset();
        reject(new R30xError({ code: 'TIMEOUT', instruction: name, message: `R30x ${name}: TIMEOUT, no reply within ${this.timeoutMs} ms` }));
      }, this.timeoutMs);
      this.#waiter = (result) => {
        clearTimeout(timer);
        this.#waiter = null;
        if (result instanceof R30xError) reject(result);
        else resolve(result);
      };
    });
  }

  #onPacket(p: Packet): void {
    if (p.addr !== this.address) return void this.emit('unexpected-packet', p, `address 0x${p.addr.toString(16)}`);
    if (p.pid === Pid.COMMAND) return void this.emit('unexpected-packet', p, 'command packet (echo?)');
    if (this.#inFlight === null) return void this.emit('unexpected-packet', p, 'no command in flight');
    const waiter = this.#waiter;
    if (waiter) return waiter(p);
    if (this.#inbox.length >= INBOX_LIMIT) return void this.emit('unexpected-packet', p, 'inbox full');
    this.#inbox.push(p);
  }

  #fail(err: R30xError): void {
    const waiter = this.#waiter;
    if (waiter) waiter(err);
  }

  #instr(): { instruction?: InstructionName } {
    return this.#inFlight ? { instruction: this.#inFlight } : {};
  }

  #protocol(name: InstructionName, why: string): R30xError {
    return new R30xError({ code: 'PROTOCOL_ERROR', instruction: name, message: `R30x ${name}: PROTOCOL_ERROR, ${why}` });
  }
}

function imageRefused(name: InstructionName): R30xError {
  return new R30xError({ code: 'IMAGE_TRANSFER_REFUSED', instruction: name, message: `R30x ${name}: IMAGE_TRANSFER_REFUSED, the agent never moves fingerprint images (nothing was sent)` });
}
function badArgument(message: string): R30xError {
  return new R30xError({ code: 'BAD_ARGUMENT', message: `R30x: BAD_ARGUMENT, ${message}` });
}
function checkBuffer(id: number): void {
  if (id !== 1 && id !== 2) throw badArgument(`char buffer ${id} is not 1 or 2`);
}
function checkU16(what: string, n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw badArgument(`${what} ${n} is not 0..65535`);
}
function checkU32(what: string, n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw badArgument(`${what} is not a 32-bit unsigned integer`);
}
