/**
 * The lab's page in a real browser: Debian's chromium driven by
 * playwright-core (never a downloaded browser). A person's button makes a
 * punch that arrives in the live feed (SSE); a device's uplink cut, punches
 * made meanwhile, then restored: the backlog arrives in the feed flagged
 * historical. A print job sent from the print box's button shows up printed,
 * with its receipt verified. Screenshots go to test-artifacts/lab/ (CI keeps that folder).
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWithPeer, systemPeer } from '../helpers/system-peer.js';
import { startTestLab, type TestLab } from './helpers.js';

const browserPeer = systemPeer('chromium', { pkg: 'chromium' });
const ARTIFACTS = resolve(import.meta.dirname, '../../test-artifacts/lab');

describeWithPeer(browserPeer, 'lab page in chromium', () => {
  let t: TestLab;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    t = await startTestLab();
    browser = await chromium.launch({ executablePath: browserPeer.path!, headless: true, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.goto(t.server.url);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await t?.close();
  }, 60_000);

  /** Click a button that runs an action, and wait until the lab answered it. */
  async function click(testid: string): Promise<string> {
    const b = page.getByTestId(testid);
    await b.evaluate((e) => e.removeAttribute('data-outcome'));
    await b.click();
    await page.waitForFunction((id) => !(document.querySelector(`[data-testid="${id}"]`) as HTMLButtonElement).disabled, testid, { timeout: 60_000 });
    return (await b.getAttribute('data-outcome')) ?? 'done';
  }

  it('clicking a person’s button makes a punch that arrives in the live feed', async () => {
    await page.getByTestId('connected-front-door').filter({ hasText: '● connected' }).waitFor({ timeout: 30_000 });
    expect(await click('punch-front-door-ana-finger')).toBe('punch');
    const row = page.locator('#feed tr[data-device="front-door"][data-person="ana"][data-method="FINGERPRINT"]');
    await row.first().waitFor({ timeout: 30_000 });
    expect(await row.first().getAttribute('data-historical')).toBe('false');
    expect(await click('punch-lobby-chen-face')).toBe('punch');
    await page.locator('#feed tr[data-device="lobby"][data-person="chen"][data-method="FACE"]').first().waitFor({ timeout: 30_000 });
    await page.screenshot({ path: `${ARTIFACTS}/punch-in-feed.png`, fullPage: true });
  }, 120_000);

  it('cutting a device’s uplink queues its punches; restoring it replays the backlog into the feed', async () => {
    await click('uplink-cut-front-door');
    await page.getByTestId('uplink-front-door').filter({ hasText: 'uplink cut' }).waitFor({ timeout: 30_000 });
    const before = await page.locator('#feed tr[data-device="front-door"]').count();
    // Punches during the outage are accepted on disk (the agent's queue grows), not delivered.
    expect(await click('punch-front-door-bo-finger')).toBe('punch');
    expect(await click('punch-front-door-ana-finger')).toBe('punch');
    expect(await click('punch-front-door-bo-finger')).toBe('punch');
    await page.getByTestId('queue-front-door').filter({ hasText: 'queue 3' }).waitFor({ timeout: 30_000 });
    expect(await page.locator('#feed tr[data-device="front-door"]').count()).toBe(before);
    await page.screenshot({ path: `${ARTIFACTS}/uplink-cut-backlog-queued.png`, fullPage: true });

    await click('uplink-restore-front-door');
    const replayed = page.locator('#feed tr[data-device="front-door"][data-historical="true"]');
    await expect.poll(() => replayed.count(), { timeout: 60_000, interval: 200 }).toBe(3);
    const people = await replayed.evaluateAll((rows) => rows.map((r) => r.getAttribute('data-person')).reverse());
    expect(people).toEqual(['bo', 'ana', 'bo']);
    await page.getByTestId('queue-front-door').filter({ hasText: 'queue 0' }).waitFor({ timeout: 60_000 });
    await page.screenshot({ path: `${ARTIFACTS}/uplink-restored-backlog-replayed.png`, fullPage: true });
  }, 180_000);

  it('the print box: a print button sends a job; the page shows it printed (the recorder’s evidence) and its receipt verified', async () => {
    await page.getByTestId('printer-print-room').filter({ hasText: 'printer front: idle' }).waitFor({ timeout: 30_000 });
    expect(await click('print-inline-print-room')).toBe('queued');
    const row = page.locator('#print-jobs tr[data-device="print-room"][data-outcome="printed"][data-receipt="verified"]');
    await row.first().waitFor({ timeout: 60_000 });
    expect(await row.first().getAttribute('data-state')).toBe('confirmed');
    await page.locator('#receipts tr[data-device="print-room"][data-kind="print_job"]').first().waitFor({ timeout: 30_000 });
    await page.screenshot({ path: `${ARTIFACTS}/print-job-printed.png`, fullPage: true });
  }, 120_000);
});
