/**
 * The printer simulator's IPP server. Placeholder with the agreed signature until the IPP engineer's
 * branch lands: it refuses to start, so nothing can mistake it for a printer.
 */
import type { PrinterSimContext, StartedServer } from './types.js';

export async function startIppServer(_ctx: PrinterSimContext, _opts: { host: string; port: number }): Promise<StartedServer> {
  throw Object.assign(new Error('the IPP server is not built yet'), { code: 'NOT_BUILT' });
}
