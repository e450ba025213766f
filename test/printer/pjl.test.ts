import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeJobEvent, encodeStatus, PjlParser, parsePjlMessage, pjlInfoStatusRequest, pjlJobFooter, pjlJobHeader, pjlStatusToPrinterStatus, UEL } from '../../firmware-bridge/printer/pjl.js';

const lat = (s: string) => Buffer.from(s, 'latin1');

describe('PJL encoder', () => {
  it('wraps a job: UEL, USTATUS on before JOB NAME, copies; footer EOJ and UEL', () => {
    expect(pjlJobHeader('J-1').toString('latin1')).toBe('\x1b%-12345X@PJL\r\n@PJL USTATUS JOB=ON\r\n@PJL USTATUS DEVICE=ON\r\n@PJL JOB NAME="J-1"\r\n');
    expect(pjlJobHeader('J-1', { copies: 3 }).toString('latin1')).toContain('@PJL SET COPIES=3\r\n');
    expect(pjlJobFooter('J-1').toString('latin1')).toBe('\x1b%-12345X@PJL EOJ NAME="J-1"\r\n\x1b%-12345X');
    expect(pjlInfoStatusRequest().toString('latin1')).toBe('\x1b%-12345X@PJL\r\n@PJL INFO STATUS\r\n\x1b%-12345X');
  });

  it('refuses a job name that could break out of the quotes, or is not printable ASCII', () => {
    for (const bad of ['', 'a"b', 'line\r\nbreak', 'é', 'x'.repeat(81)]) expect(() => pjlJobHeader(bad)).toThrow(expect.objectContaining({ code: 'PRINTER_JOB_NAME_INVALID' }));
    expect(() => pjlJobHeader('ok', { copies: 0 })).toThrow(expect.objectContaining({ code: 'PRINTER_COPIES_INVALID' }));
  });
});

describe('PJL parser: printer replies', () => {
  it('parses USTATUS JOB START/END with NAME and PAGES', () => {
    const p = new PjlParser();
    const msgs = p.push(lat('@PJL USTATUS JOB\r\nSTART\r\nNAME="J-1"\r\n\f@PJL USTATUS JOB\r\nEND\r\nNAME="J-1"\r\nPAGES=3\r\n\f'));
    expect(msgs).toEqual([
      { kind: 'job', event: 'START', name: 'J-1', pages: undefined },
      { kind: 'job', event: 'END', name: 'J-1', pages: 3 },
    ]);
    expect(p.malformed).toBe(0);
  });

  it('parses INFO STATUS and USTATUS DEVICE replies, and maps codes to IPP-like reasons', () => {
    const [m] = new PjlParser().push(lat('@PJL INFO STATUS\r\nCODE=10001\r\nDISPLAY="READY"\r\nONLINE=TRUE\r\n\f'));
    expect(m).toEqual({ kind: 'status', source: 'info', status: { code: 10001, display: 'READY', online: true } });
    const [d] = new PjlParser().push(lat('@PJL USTATUS DEVICE\r\nCODE=41303\r\nDISPLAY="LOAD PAPER"\r\nONLINE=TRUE\r\n\f'));
    expect(d).toMatchObject({ kind: 'status', source: 'ustatus' });
    const map = (code: number, online = true) => pjlStatusToPrinterStatus({ code, display: undefined, online });
    expect(map(10001)).toEqual({ state: 'idle', reasons: ['none'] });
    expect(map(10023)).toEqual({ state: 'processing', reasons: ['none'] });
    expect(map(41303)).toEqual({ state: 'stopped', reasons: ['media-empty'] });
    expect(map(42000)).toEqual({ state: 'stopped', reasons: ['media-jam'] });
    expect(map(40021)).toEqual({ state: 'stopped', reasons: ['door-open'] });
    expect(map(10001, false)).toEqual({ state: 'stopped', reasons: ['offline-report'] });
    expect(map(11201)).toEqual({ state: 'idle', reasons: ['media-empty-report'] });
    expect(map(50000).state).toBe('stopped');
  });

  it('strips UELs and stray line ends in the back channel; keeps well-formed messages it has no use for', () => {
    const p = new PjlParser();
    const msgs = p.push(Buffer.concat([UEL, lat('\r\n@PJL INFO ID\r\n"LaserJet"\r\n\f'), UEL, lat('\r\n\f')]));
    expect(msgs).toEqual([{ kind: 'other', command: '@PJL INFO ID' }]);
    expect(p.malformed).toBe(0);
  });

  it('skips malformed messages with a count and goes on', () => {
    const p = new PjlParser();
    const msgs = p.push(lat('garbage\r\n\f@PJL USTATUS JOB\r\nSTART\r\nPAGES=x\r\n\f@PJL INFO STATUS\r\nCODE=abc\r\n\f@PJL USTATUS JOB\r\nEND\r\nNAME="a"\r\nPAGES=1\r\n\f'));
    expect(msgs).toEqual([{ kind: 'job', event: 'END', name: 'a', pages: 1 }]);
    expect(p.malformed).toBe(3);
  });

  it('drops a message that never ends (bounded memory) and recovers at the next form feed', () => {
    const p = new PjlParser();
    for (let i = 0; i < 10; i++) expect(p.push(Buffer.alloc(4096, 0x41))).toEqual([]);
    expect(p.malformed).toBe(1);
    expect(p.push(lat('\f@PJL USTATUS JOB\r\nEND\r\nNAME="a"\r\n\f'))).toEqual([{ kind: 'job', event: 'END', name: 'a', pages: undefined }]);
    expect(p.malformed).toBe(1);
  });

  it('parsePjlMessage rejects a message without an @PJL line', () => {
    expect(parsePjlMessage('CODE=10001')).toBeNull();
  });
});

describe('PJL parser properties', () => {
  const name = fc.stringMatching(/^[A-Za-z0-9._-]{1,20}$/);
  const message = fc.oneof(
    fc.record({ t: fc.constant('job' as const), event: fc.constantFrom('START' as const, 'END' as const), name, pages: fc.option(fc.nat(9999), { nil: undefined }) }),
    fc.record({ t: fc.constant('status' as const), source: fc.constantFrom('info' as const, 'ustatus' as const), code: fc.integer({ min: 10000, max: 99999 }), online: fc.boolean() }),
  );
  const encode = (m: { t: string } & Record<string, unknown>): Buffer =>
    m.t === 'job' ? encodeJobEvent(m.event as 'START' | 'END', m.name as string, m.pages as number | undefined) : encodeStatus(m.source as 'info' | 'ustatus', { code: m.code as number, display: 'X', online: m.online as boolean });

  it('torn anywhere across chunks, the same messages come out as from one chunk', () => {
    fc.assert(
      fc.property(fc.array(message, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 20 }), (msgs, cuts) => {
        const all = Buffer.concat(msgs.map((m) => encode(m)));
        const whole = new PjlParser().push(all);
        expect(whole).toHaveLength(msgs.length);
        const p = new PjlParser();
        const got = [];
        const points = [...new Set(cuts.map((c) => (all.length ? c % all.length : 0)))].sort((a, b) => a - b);
        let from = 0;
        for (const at of [...points, all.length]) {
          got.push(...p.push(all.subarray(from, at)));
          from = at;
        }
        expect(got).toEqual(whole);
        expect(p.malformed).toBe(0);
      }),
    );
  });

  it('never throws on arbitrary bytes, and valid messages after garbage still parse', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), message, (junk, m) => {
        const p = new PjlParser();
        p.push(junk);
        const out = p.push(Buffer.concat([lat('\f'), encode(m)]));
        expect(out.length).toBeGreaterThanOrEqual(1);
        expect(out.at(-1)!.kind).toBe(m.t);
      }),
    );
  });
});
