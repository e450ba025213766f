/**
 * The simulated printer's description and job-template attributes (RFC 8011 §5.4, PWG 5100.12/IPP
 * Everywhere): what ipptool's standard tests (get-printer-attributes, ipp-1.1, ipp-2.0) look for.
 */
import { attr, type IppAttribute, type IppValue } from '../../../firmware-bridge/printer/ipp/codec.js';
import { OP } from '../../../firmware-bridge/printer/ipp/constants.js';

export const SUPPORTED_FORMATS = ['application/pdf', 'image/pwg-raster', 'application/octet-stream'] as const;
export const SUPPORTED_OPERATIONS = [OP['Print-Job'], OP['Validate-Job'], OP['Create-Job'], OP['Send-Document'], OP['Cancel-Job'], OP['Get-Job-Attributes'], OP['Get-Jobs'], OP['Get-Printer-Attributes']];
export const MAX_COPIES = 99;
const MEDIA = ['iso_a4_210x297mm', 'na_letter_8.5x11in'];

/** RFC 2579 DateAndTime, UTC: the printer's clock for printer-current-time and the job time stamps. */
export function dateTime(ms: number): IppValue {
  const d = new Date(ms);
  const b = Buffer.alloc(11);
  b.writeUInt16BE(d.getUTCFullYear(), 0);
  b[2] = d.getUTCMonth() + 1;
  b[3] = d.getUTCDate();
  b[4] = d.getUTCHours();
  b[5] = d.getUTCMinutes();
  b[6] = d.getUTCSeconds();
  b[7] = Math.floor(d.getUTCMilliseconds() / 100);
  b[8] = 0x2b; // '+'
  return { tag: 'dateTime', value: new Uint8Array(b) };
}

function mediaCol(media: string): IppValue {
  const [x, y] = media === 'iso_a4_210x297mm' ? [21000, 29700] : [21590, 27940];
  return {
    tag: 'collection',
    members: [
      { name: 'media-size', values: [{ tag: 'collection', members: [attr('x-dimension', 'integer', x), attr('y-dimension', 'integer', y)] }] },
      attr('media-top-margin', 'integer', 423),
      attr('media-bottom-margin', 'integer', 423),
      attr('media-left-margin', 'integer', 423),
      attr('media-right-margin', 'integer', 423),
      attr('media-source', 'keyword', 'main'),
      attr('media-type', 'keyword', 'stationery'),
    ],
  };
}

export interface PrinterView {
  /** ipp://host:port/ipp/print as the client addressed us. */
  uri: string;
  moreInfo: string;
  state: number;
  reasons: string[];
  message: string;
  accepting: boolean;
  queued: number;
  upTime: number;
  nowMs: number;
  uuid: string;
}

/** Every printer attribute, in the order a real printer lists them. */
export function printerAttributes(v: PrinterView): IppAttribute[] {
  return [
    attr('printer-uri-supported', 'uri', v.uri),
    attr('uri-security-supported', 'keyword', v.uri.startsWith('ipps:') ? 'tls' : 'none'),
    attr('uri-authentication-supported', 'keyword', 'none'),
    attr('printer-name', 'name', 'tallybox-sim'),
    attr('printer-location', 'text', 'simulator'),
    attr('printer-info', 'text', 'Tallybox simulated printer'),
    attr('printer-more-info', 'uri', v.moreInfo),
    attr('printer-make-and-model', 'text', 'Tallybox Simulated Printer'),
    attr('printer-uuid', 'uri', `urn:uuid:${v.uuid}`),
    attr('printer-state', 'enum', v.state),
    attr('printer-state-reasons', 'keyword', ...v.reasons),
    attr('printer-state-message', 'text', v.message),
    attr('printer-is-accepting-jobs', 'boolean', v.accepting),
    attr('queued-job-count', 'integer', v.queued),
    attr('printer-up-time', 'integer', v.upTime),
    { name: 'printer-current-time', values: [dateTime(v.nowMs)] },
    attr('printer-state-change-time', 'integer', 1),
    attr('ipp-versions-supported', 'keyword', '1.0', '1.1', '2.0'),
    attr('ipp-features-supported', 'keyword', 'none'),
    attr('operations-supported', 'enum', ...SUPPORTED_OPERATIONS),
    attr('multiple-document-jobs-supported', 'boolean', false),
    attr('multiple-operation-time-out', 'integer', 60),
    attr('charset-configured', 'charset', 'utf-8'),
    attr('charset-supported', 'charset', 'utf-8', 'us-ascii'),
    attr('natural-language-configured', 'naturalLanguage', 'en'),
    attr('generated-natural-language-supported', 'naturalLanguage', 'en'),
    attr('document-format-default', 'mimeMediaType', 'application/octet-stream'),
    attr('document-format-supported', 'mimeMediaType', ...SUPPORTED_FORMATS),
    attr('pdl-override-supported', 'keyword', 'attempted'),
    attr('compression-supported', 'keyword', 'none'),
    attr('job-ids-supported', 'boolean', true),
    attr('which-jobs-supported', 'keyword', 'completed', 'not-completed', 'all'),
    attr('job-creation-attributes-supported', 'keyword', 'copies', 'media', 'media-col', 'sides', 'orientation-requested', 'print-quality', 'printer-resolution', 'finishings', 'output-bin'),
    attr('color-supported', 'boolean', false),
    attr('pages-per-minute', 'integer', 20),
    attr('copies-default', 'integer', 1),
    { name: 'copies-supported', values: [{ tag: 'rangeOfInteger', lower: 1, upper: MAX_COPIES }] },
    attr('finishings-default', 'enum', 3),
    attr('finishings-supported', 'enum', 3),
    attr('media-default', 'keyword', MEDIA[0]!),
    attr('media-supported', 'keyword', ...MEDIA),
    attr('media-ready', 'keyword', MEDIA[0]!),
    { name: 'media-col-default', values: [mediaCol(MEDIA[0]!)] },
    { name: 'media-col-ready', values: [mediaCol(MEDIA[0]!)] },
    { name: 'media-col-database', values: MEDIA.map(mediaCol) },
    attr('media-col-supported', 'keyword', 'media-bottom-margin', 'media-left-margin', 'media-right-margin', 'media-size', 'media-source', 'media-top-margin', 'media-type'),
    { name: 'media-size-supported', values: [{ tag: 'collection', members: [attr('x-dimension', 'integer', 21000), attr('y-dimension', 'integer', 29700)] }, { tag: 'collection', members: [attr('x-dimension', 'integer', 21590), attr('y-dimension', 'integer', 27940)] }] },
    attr('media-source-supported', 'keyword', 'main'),
    attr('media-type-supported', 'keyword', 'stationery'),
    attr('media-top-margin-supported', 'integer', 423),
    attr('media-bottom-margin-supported', 'integer', 423),
    attr('media-left-margin-supported', 'integer', 423),
    attr('media-right-margin-supported', 'integer', 423),
    attr('orientation-requested-default', 'enum', 3),
    attr('orientation-requested-supported', 'enum', 3, 4, 5, 6),
    attr('output-bin-default', 'keyword', 'face-down'),
    attr('output-bin-supported', 'keyword', 'face-down'),
    attr('print-quality-default', 'enum', 4),
    attr('print-quality-supported', 'enum', 3, 4, 5),
    { name: 'printer-resolution-default', values: [{ tag: 'resolution', x: 600, y: 600, units: 3 }] },
    { name: 'printer-resolution-supported', values: [{ tag: 'resolution', x: 600, y: 600, units: 3 }] },
    attr('sides-default', 'keyword', 'one-sided'),
    attr('sides-supported', 'keyword', 'one-sided'),
    attr('job-sheets-default', 'name', 'none'),
    attr('job-sheets-supported', 'name', 'none'),
    attr('job-priority-default', 'integer', 50),
    attr('job-priority-supported', 'integer', 100),
    attr('job-hold-until-default', 'keyword', 'no-hold'),
    attr('job-hold-until-supported', 'keyword', 'no-hold'),
    attr('number-up-default', 'integer', 1),
    { name: 'number-up-supported', values: [{ tag: 'integer', value: 1 }] },
    attr('page-ranges-supported', 'boolean', false),
    { name: 'pwg-raster-document-resolution-supported', values: [{ tag: 'resolution', x: 600, y: 600, units: 3 }] },
    attr('pwg-raster-document-type-supported', 'keyword', 'black_1', 'sgray_8'),
    attr('pwg-raster-document-sheet-back', 'keyword', 'normal'),
  ];
}

/** requested-attributes groups (RFC 8011 §4.2.5.1). */
const DESCRIPTION_ONLY = new Set(['copies-default', 'finishings-default', 'media-default', 'media-col-default', 'orientation-requested-default', 'output-bin-default', 'print-quality-default', 'printer-resolution-default', 'sides-default', 'job-sheets-default', 'job-priority-default', 'job-hold-until-default', 'number-up-default']);
function isJobTemplate(name: string): boolean {
  return /-(default|supported|ready|database)$/.test(name) && (DESCRIPTION_ONLY.has(name) || /^(copies|finishings|media|orientation-requested|output-bin|print-quality|printer-resolution|sides|job-sheets|job-priority|job-hold-until|number-up|page-ranges)/.test(name));
}

/** The attributes a requested-attributes list selects ('all' when absent). */
export function selectAttributes(all: IppAttribute[], requested: string[] | undefined): IppAttribute[] {
  const want = new Set(requested && requested.length > 0 ? requested : ['all']);
  // media-col-database is never part of 'all' or a group: only sent when asked for by name (PWG 5100.7).
  const named = (a: IppAttribute) => want.has(a.name);
  if (want.has('all')) return all.filter((a) => a.name !== 'media-col-database' || named(a));
  return all.filter((a) => named(a) || (a.name !== 'media-col-database' && ((want.has('job-template') && isJobTemplate(a.name)) || (want.has('printer-description') && !isJobTemplate(a.name)))));
}
