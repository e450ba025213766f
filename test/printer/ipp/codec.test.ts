/**
 * IPP codec (RFC 8010): byte-exact known messages, every value tag, 1setOf, collections, out-of-band
 * values; truncated and malformed input rejected as PRINTER_PROTOCOL; property tests: random bytes
 * never make the decoder throw anything but PRINTER_PROTOCOL, random attribute sets round-trip, and
 * every proper prefix of a valid message is 'truncated'.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { attr, decodeMessage, encodeMessage, findAttr, group, type IppAttribute, type IppMessage, type IppValue, ints, strings } from '../../../firmware-bridge/printer/ipp/codec.js';
import { isTallyboxError } from '../../../src/util/errors.js';

function rejection(fn: () => unknown): { code: string; reason: unknown } {
  try {
    fn();
  } catch (err) {
    if (!isTallyboxError(err)) throw new Error(`threw a non-TallyboxError: ${String(err)}`);
    return { code: err.code, reason: err.details.reason };
  }
  throw new Error('did not throw');
}

describe('IPP codec: known bytes', () => {
  // RFC 8010 §A.1-style Get-Printer-Attributes request, written out by hand.
  const gpa = Buffer.concat([
    Buffer.from([0x02, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x01, 0x01]),
    Buffer.from([0x47, 0x00, 0x12]),
    Buffer.from('attributes-charset'),
    Buffer.from([0x00, 0x05]),
    Buffer.from('utf-8'),
    Buffer.from([0x48, 0x00, 0x1b]),
    Buffer.from('attributes-natural-language'),
    Buffer.from([0x00, 0x02]),
    Buffer.from('en'),
    Buffer.from([0x44, 0x00, 0x14]),
    Buffer.from('requested-attributes'),
    Buffer.from([0x00, 0x0d]),
    Buffer.from('printer-state'),
    Buffer.from([0x44, 0x00, 0x00, 0x00, 0x0f]),
    Buffer.from('job-impressions'),
    Buffer.from([0x03]),
  ]);
  const msg: IppMessage = {
    version: { major: 2, minor: 0 },
    code: 0x0b,
    requestId: 1,
    groups: [
      group('operation', [
        attr('attributes-charset', 'charset', 'utf-8'),
        attr('attributes-natural-language', 'naturalLanguage', 'en'),
        attr('requested-attributes', 'keyword', 'printer-state', 'job-impressions'),
      ]),
    ],
  };

  it('encodes a request byte for byte, with the 1setOf as an additional value', () => {
    expect(encodeMessage(msg).equals(gpa)).toBe(true);
  });

  it('decodes it back, and says where the document data begins', () => {
    const withData = Buffer.concat([gpa, Buffer.from('%PDF-1.4')]);
    const d = decodeMessage(withData);
    expect(d.message).toEqual(msg);
    expect(d.dataOffset).toBe(gpa.length);
    expect(withData.subarray(d.dataOffset).toString()).toBe('%PDF-1.4');
    expect(strings(findAttr(d.message, 'operation', 'requested-attributes'))).toEqual(['printer-state', 'job-impressions']);
  });

  it('round-trips every value syntax, collections (nested) and out-of-band values', () => {
    const all: IppMessage = {
      version: { major: 1, minor: 1 },
      code: 0x0000,
      requestId: 0x7fffffff,
      groups: [
        group('operation', [attr('attributes-charset', 'charset', 'utf-8'), attr('status-message', 'text', 'successful-ok')]),
        group('printer', [
          attr('printer-state', 'enum', 3),
          attr('queued-job-count', 'integer', -5),
          attr('printer-is-accepting-jobs', 'boolean', true, false),
          { name: 'copies-supported', values: [{ tag: 'rangeOfInteger', lower: 1, upper: 99 }] },
          { name: 'printer-resolution-default', values: [{ tag: 'resolution', x: 600, y: 300, units: 3 }] },
          { name: 'printer-current-time', values: [{ tag: 'dateTime', value: Uint8Array.from([7, 234, 12, 1, 13, 40, 0, 0, 43, 0, 0]) }] },
          { name: 'printer-uuid-bytes', values: [{ tag: 'octetString', value: Uint8Array.from([0, 255, 1]) }] },
          { name: 'printer-info', values: [{ tag: 'textWithLanguage', lang: 'de', value: 'Drucker ü' }] },
          { name: 'printer-name', values: [{ tag: 'nameWithLanguage', lang: 'en', value: 'p1' }, { tag: 'name', value: 'other' }] },
          attr('printer-uri-supported', 'uri', 'ipp://127.0.0.1:631/ipp/print'),
          attr('uri-scheme', 'uriScheme', 'ipp'),
          attr('document-format-supported', 'mimeMediaType', 'application/pdf', 'image/pwg-raster'),
          { name: 'printer-location', values: [{ tag: 'no-value' }] },
          { name: 'oob', values: [{ tag: 'unknown' }, { tag: 'unsupported' }, { tag: 'not-settable' }, { tag: 'delete-attribute' }, { tag: 'admin-define' }] },
          { name: 'odd', values: [{ tag: 'other', code: 0x4f, value: Uint8Array.from([1, 2]) }] },
          {
            name: 'media-col-default',
            values: [
              {
                tag: 'collection',
                members: [
                  { name: 'media-size', values: [{ tag: 'collection', members: [attr('x-dimension', 'integer', 21000), attr('y-dimension', 'integer', 29700)] }] },
                  attr('media-type', 'keyword', 'stationery', 'plain'),
                ],
              },
              { tag: 'collection', members: [] },
            ],
          },
        ]),
        group('job', []),
      ],
    };
    const d = decodeMessage(encodeMessage(all));
    expect(d.message).toEqual(all);
    expect(ints(findAttr(d.message, 'printer', 'printer-state'))).toEqual([3]);
  });
});

describe('IPP codec: bad input', () => {
  const good = encodeMessage({ version: { major: 2, minor: 0 }, code: 0x0b, requestId: 9, groups: [group('operation', [attr('attributes-charset', 'charset', 'utf-8'), attr('copies', 'integer', 2)])] });

  it('every proper prefix is truncated (so a stream reader knows to wait), never anything else', () => {
    for (let n = 0; n < good.length; n++) expect(rejection(() => decodeMessage(good.subarray(0, n)))).toEqual({ code: 'PRINTER_PROTOCOL', reason: 'truncated' });
  });

  it.each([
    ['attribute before any group', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 0x21, 0, 1, 0x61, 0, 4, 0, 0, 0, 1, 3])],
    ['additional value with no attribute', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1, 0x21, 0, 0, 0, 4, 0, 0, 0, 1, 3])],
    ['integer of 3 bytes', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1, 0x21, 0, 1, 0x61, 0, 3, 0, 0, 1, 3])],
    ['boolean of value 2', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1, 0x22, 0, 1, 0x61, 0, 1, 2, 3])],
    ['rangeOfInteger of 4 bytes', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1, 0x33, 0, 1, 0x61, 0, 4, 0, 0, 0, 1, 3])],
    ['endCollection outside a collection', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1, 0x37, 0, 1, 0x61, 0, 0, 3])],
    ['collection value before memberAttrName', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1, 0x34, 0, 1, 0x61, 0, 0, 0x21, 0, 0, 0, 4, 0, 0, 0, 1, 0x37, 0, 0, 0, 0, 3])],
    ['name that is not UTF-8', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1, 0x44, 0, 1, 0xff, 0, 0, 3])],
    ['reserved delimiter 0x00', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 0, 3])],
    ['textWithLanguage with a bad inner length', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1, 0x35, 0, 1, 0x61, 0, 6, 0, 2, 0x65, 0x6e, 0, 9, 3])],
    ['extension tag 0x7f', Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1, 0x7f, 0, 1, 0x61, 0, 0, 3])],
  ])('%s is malformed', (_what, bytes) => {
    expect(rejection(() => decodeMessage(bytes))).toEqual({ code: 'PRINTER_PROTOCOL', reason: 'malformed' });
  });

  it('collections nested beyond the limit are malformed, not a stack overflow', () => {
    const open = [0x34, 0, 0, 0, 0, 0x4a, 0, 0, 0, 1, 0x6d];
    const bytes = Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1, 0x34, 0, 1, 0x61, 0, 0, 0x4a, 0, 0, 0, 1, 0x6d, ...Array.from({ length: 40 }, () => open).flat()]);
    expect(rejection(() => decodeMessage(bytes)).code).toBe('PRINTER_PROTOCOL');
  });

  it('the encoder refuses a value longer than a SIGNED-SHORT length', () => {
    const big = 'x'.repeat(0x8000);
    expect(rejection(() => encodeMessage({ version: { major: 2, minor: 0 }, code: 2, requestId: 1, groups: [group('operation', [attr('job-name', 'name', big)])] })).code).toBe('PRINTER_PROTOCOL');
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

const arbName = fc.string({ minLength: 1, maxLength: 20 });
const int32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
const arbScalar: fc.Arbitrary<IppValue> = fc.oneof(
  int32.map((value) => ({ tag: 'integer', value }) as IppValue),
  int32.map((value) => ({ tag: 'enum', value }) as IppValue),
  fc.boolean().map((value) => ({ tag: 'boolean', value }) as IppValue),
  fc.tuple(fc.constantFrom('text', 'name', 'keyword', 'uri', 'uriScheme', 'charset', 'naturalLanguage', 'mimeMediaType'), fc.string({ maxLength: 30, unit: 'grapheme' })).map(([tag, value]) => ({ tag, value }) as IppValue),
  fc.tuple(fc.constantFrom('textWithLanguage', 'nameWithLanguage'), fc.string({ maxLength: 8 }), fc.string({ maxLength: 30, unit: 'grapheme' })).map(([tag, lang, value]) => ({ tag, lang, value }) as IppValue),
  fc.tuple(int32, int32).map(([lower, upper]) => ({ tag: 'rangeOfInteger', lower, upper }) as IppValue),
  fc.tuple(int32, int32, fc.integer({ min: 0, max: 255 })).map(([x, y, units]) => ({ tag: 'resolution', x, y, units }) as IppValue),
  fc.uint8Array({ minLength: 11, maxLength: 11 }).map((value) => ({ tag: 'dateTime', value }) as IppValue),
  fc.uint8Array({ maxLength: 40 }).map((value) => ({ tag: 'octetString', value }) as IppValue),
  fc.constantFrom<IppValue>({ tag: 'unsupported' }, { tag: 'unknown' }, { tag: 'no-value' }, { tag: 'not-settable' }, { tag: 'delete-attribute' }, { tag: 'admin-define' }),
);
const { value: arbValue } = fc.letrec<{ value: IppValue; coll: IppValue }>((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, arbScalar, tie('coll')),
  coll: fc.array(fc.record({ name: arbName, values: fc.array(tie('value'), { minLength: 1, maxLength: 3 }) }), { maxLength: 3 }).map((members) => ({ tag: 'collection', members }) as IppValue),
}));
const arbAttribute: fc.Arbitrary<IppAttribute> = fc.record({ name: arbName, values: fc.array(arbValue, { minLength: 1, maxLength: 4 }) });
const arbMessage: fc.Arbitrary<IppMessage> = fc.record({
  version: fc.record({ major: fc.integer({ min: 0, max: 255 }), minor: fc.integer({ min: 0, max: 255 }) }),
  code: fc.integer({ min: 0, max: 0xffff }),
  requestId: int32,
  groups: fc.array(
    fc.tuple(fc.constantFrom('operation', 'job', 'printer', 'unsupported', 'document'), fc.array(arbAttribute, { maxLength: 5 })).map(([t, a]) => group(t, a)),
    { maxLength: 4 },
  ),
});

function onlyProtocolErrors(bytes: Uint8Array): boolean {
  try {
    decodeMessage(bytes);
  } catch (err) {
    return isTallyboxError(err, 'PRINTER_PROTOCOL');
  }
  return true;
}

describe('IPP codec: properties', () => {
  it('random bytes never make the decoder throw anything but PRINTER_PROTOCOL', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (b) => onlyProtocolErrors(b)), { numRuns: 3000 });
  });

  it('random bytes after a valid header and group tag (deeper paths) likewise', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (b) => onlyProtocolErrors(Buffer.concat([Buffer.from([2, 0, 0, 0x0b, 0, 0, 0, 1, 1]), b]))), { numRuns: 3000 });
  });

  it('random attribute sets round-trip', () => {
    fc.assert(
      fc.property(arbMessage, (m) => {
        expect(decodeMessage(encodeMessage(m)).message).toEqual(m);
      }),
      { numRuns: 500 },
    );
  });

  it('mutated valid messages (a flipped, dropped or inserted byte) never throw anything but PRINTER_PROTOCOL', () => {
    fc.assert(
      fc.property(arbMessage, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('flip', 'drop', 'insert'), (m, at, v, how) => {
        const b = encodeMessage(m);
        const i = at % b.length;
        let mutated: Buffer = b;
        if (how === 'flip') b[i] = b[i]! ^ (v || 1);
        if (how === 'drop') mutated = Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
        if (how === 'insert') mutated = Buffer.concat([b.subarray(0, i), Buffer.of(v), b.subarray(i)]);
        return onlyProtocolErrors(mutated);
      }),
      { numRuns: 1000 },
    );
  });
});
