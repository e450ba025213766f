/** Start a lab in this process (its agents are child processes) with its HTTP server and a typed client. */
import { join } from 'node:path';
import { LabClient } from '../../simulators/lab/client.js';
import { loadLabConfig } from '../../simulators/lab/config.js';
import { Lab } from '../../simulators/lab/lab.js';
import { startLabServer, type LabServer } from '../../simulators/lab/server.js';

export const SMALL_LAB = join(import.meta.dirname, 'fixtures', 'small.yaml');

export interface TestLab {
  lab: Lab;
  server: LabServer;
  client: LabClient;
  close(): Promise<void>;
}

export async function startTestLab(opts: { file?: string; record?: string; seed?: number } = {}): Promise<TestLab> {
  const { config, text } = loadLabConfig(opts.file ?? SMALL_LAB);
  const lab = await Lab.start({ config, configText: text, ...(opts.record ? { record: opts.record } : {}), ...(opts.seed !== undefined ? { seed: opts.seed } : {}) });
  let server: LabServer;
  try {
    server = await startLabServer(lab);
  } catch (err) {
    await lab.close();
    throw err;
  }
  return {
    lab,
    server,
    client: new LabClient(server.url),
    close: async () => {
      await server.close();
      await lab.close();
    },
  };
}
