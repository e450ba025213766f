import { describe, expect, it } from 'vitest';
import { canonicalMac, isRandomisedMac } from '../../firmware-bridge/wifi/events.js';
import { parseForwarded } from '../../firmware-bridge/wifi/forwarded.js';
import { parseHostapdEvent, parseStaReply, parseStatusSsid, stationChange } from '../../firmware-bridge/wifi/hostapd-parse.js';
import { parseLeaseFile } from '../../firmware-bridge/wifi/leases.js';

describe('MACs', () => {
  it('canonicalises every common spelling and refuses what is not a MAC', () => {
    for (const v of ['AA:BB:CC:DD:EE:FF', 'aa-bb-cc-dd-ee-ff', 'aabb.ccdd.eeff', 'aabbccddeeff']) expect(canonicalMac(v)).toBe('aa:bb:cc:dd:ee:ff');
    for (const v of ['', 'aa:bb:cc', 'zz:bb:cc:dd:ee:ff', '*']) expect(canonicalMac(v)).toBeUndefined();
  });
  it('tells a locally administered (randomised) MAC from a vendor one', () => {
    expect(isRandomisedMac('da:a1:19:00:00:01')).toBe(true); // 0xda: bit 1 set
    expect(isRandomisedMac('3c:22:fb:00:00:01')).toBe(false); // Apple OUI
    expect(isRandomisedMac('02:00:00:00:00:01')).toBe(true);
  });
});

describe('hostapd control messages', () => {
  it('parses real-format events and picks out joins and leaves only', () => {
    const samples: Array<[string, string | undefined]> = [
      ['<3>AP-STA-CONNECTED 3c:22:fb:12:34:56', 'joined'],
      ['<3>AP-STA-CONNECTED 3c:22:fb:12:34:56 keyid=guest', 'joined'],
      ['<3>AP-STA-DISCONNECTED 3c:22:fb:12:34:56', 'left'],
      ['<3>EAPOL-4WAY-HS-COMPLETED 3c:22:fb:12:34:56', undefined],
      ['<3>AP-STA-POSSIBLE-PSK-MISMATCH 3c:22:fb:12:34:56', undefined],
      ['<2>CTRL-EVENT-EAP-STARTED 3c:22:fb:12:34:56', undefined],
      ['<3>AP-ENABLED ', undefined],
      ['<3>WPS-PBC-ACTIVE', undefined],
      ['<3>AP-STA-CONNECTED not-a-mac', undefined],
    ];
    for (const [msg, change] of samples) {
      const ev = parseHostapdEvent(msg);
      expect(ev, msg).toBeDefined();
      expect(stationChange(ev!)?.change, msg).toBe(change);
    }
    expect(stationChange(parseHostapdEvent('<3>AP-STA-CONNECTED 3C:22:FB:12:34:56')!)).toEqual({ change: 'joined', mac: '3c:22:fb:12:34:56' });
  });
  it('does not take replies for events', () => {
    for (const r of ['OK\n', 'PONG\n', 'FAIL\n', '3c:22:fb:12:34:56\nflags=[AUTH]\n', '']) expect(parseHostapdEvent(r)).toBeUndefined();
  });
  it('reads STA-FIRST / STA-NEXT replies; an unauthorized station has not joined', () => {
    expect(parseStaReply('3c:22:fb:12:34:56\nflags=[AUTH][ASSOC][AUTHORIZED][WMM]\naid=1\n')).toEqual({ mac: '3c:22:fb:12:34:56', authorized: true });
    expect(parseStaReply('3c:22:fb:12:34:56\nflags=[AUTH][ASSOC]\n')).toEqual({ mac: '3c:22:fb:12:34:56', authorized: false });
    expect(parseStaReply('')).toBeUndefined();
    expect(parseStaReply('FAIL\n')).toBeUndefined();
  });
});

describe('dnsmasq lease file', () => {
  const good = '1733050000 3c:22:fb:12:34:56 192.168.1.23 Alices-iPhone 01:3c:22:fb:12:34:56\n1733050100 da:a1:19:00:00:01 192.168.1.24 * *\n';
  it('parses leases, with * for an unknown hostname or client id', () => {
    const f = parseLeaseFile(good);
    expect(f).toMatchObject({ malformed: 0, torn: 0 });
    expect(f.leases).toEqual([
      { expiry: 1733050000, mac: '3c:22:fb:12:34:56', ip: '192.168.1.23', hostname: 'Alices-iPhone', clientId: '01:3c:22:fb:12:34:56' },
      { expiry: 1733050100, mac: 'da:a1:19:00:00:01', ip: '192.168.1.24' },
    ]);
  });
  it('skips and counts malformed lines, and a torn last line, never throwing', () => {
    const text = `${good}garbage line\n1733 zz:zz 1.2.3.4 x *\n\n1733050200 3c:22:fb:00:00:09 192.168.1.30 Bob`;
    const f = parseLeaseFile(text);
    expect(f.leases).toHaveLength(2);
    expect(f.malformed).toBe(2);
    expect(f.torn).toBe(1);
  });
  it('ignores the DHCPv6 part (duid line and IAID leases)', () => {
    const f = parseLeaseFile(`${good}duid 00:01:00:01:2c:ab:cd:ef:3c:22:fb:12:34:56\n1733050300 1234567 fd00::23 Alices-iPhone 00:01:00:01\n`);
    expect(f).toMatchObject({ malformed: 0, torn: 0 });
    expect(f.leases).toHaveLength(2);
  });
  it('an empty file has no leases', () => {
    expect(parseLeaseFile('')).toEqual({ leases: [], malformed: 0, torn: 0 });
  });
});

describe('hook messages (hostapd_cli -a and dnsmasq --dhcp-script)', () => {
  it('hostapd-cli joins and leaves; other events ignored', () => {
    expect(parseForwarded('{"v":1,"source":"hostapd-cli","iface":"wlan1","event":"AP-STA-CONNECTED","mac":"3C:22:FB:12:34:56"}')).toEqual({
      ok: true,
      event: { type: 'joined', source: 'hostapd-cli', iface: 'wlan1', mac: '3c:22:fb:12:34:56' },
    });
    expect(parseForwarded('{"v":1,"source":"hostapd-cli","iface":"wlan1","event":"AP-STA-DISCONNECTED","mac":"3c:22:fb:12:34:56"}')).toMatchObject({ ok: true, event: { type: 'left' } });
    expect(parseForwarded('{"v":1,"source":"hostapd-cli","iface":"wlan1","event":"EAPOL-4WAY-HS-COMPLETED","mac":"3c:22:fb:12:34:56"}')).toEqual({ ok: false, reason: 'ignored' });
  });
  it('dnsmasq-script add/old/del with the DNSMASQ_* fingerprint', () => {
    const add = parseForwarded(
      JSON.stringify({
        v: 1,
        source: 'dnsmasq-script',
        action: 'add',
        mac: 'da:a1:19:00:00:01',
        ip: '10.0.0.5',
        hostname: 'phone',
        env: { DNSMASQ_INTERFACE: 'br-lan', DNSMASQ_CLIENT_ID: '01:da:a1:19:00:00:01', DNSMASQ_REQUESTED_OPTIONS: '1,121,3,6,15,119,252' },
      }),
    );
    expect(add).toEqual({
      ok: true,
      event: { type: 'joined', source: 'dnsmasq-script', iface: 'br-lan', mac: 'da:a1:19:00:00:01', fingerprint: { clientId: '01:da:a1:19:00:00:01', hostname: 'phone', requestedOptions: '1,121,3,6,15,119,252' } },
    });
    expect(parseForwarded(JSON.stringify({ v: 1, source: 'dnsmasq-script', action: 'old', mac: 'da:a1:19:00:00:01', ip: '10.0.0.5', env: {} }))).toMatchObject({ ok: true, event: { type: 'joined', iface: 'dhcp' } });
    expect(parseForwarded(JSON.stringify({ v: 1, source: 'dnsmasq-script', action: 'del', mac: 'da:a1:19:00:00:01', ip: '10.0.0.5', env: {} }))).toMatchObject({ ok: true, event: { type: 'left' } });
    expect(parseForwarded(JSON.stringify({ v: 1, source: 'dnsmasq-script', action: 'init', mac: '', env: {} }))).toEqual({ ok: false, reason: 'ignored' });
  });
  it('malformed input is refused, never thrown', () => {
    for (const l of [
      '',
      'not json',
      '[]',
      'null',
      '{"v":2}',
      '{"v":1,"source":"x"}',
      '{"v":1,"source":"hostapd-cli","iface":"wlan0;rm -rf","event":"AP-STA-CONNECTED","mac":"3c:22:fb:12:34:56"}',
      '{"v":1,"source":"dnsmasq-script","action":"add","mac":"nope"}',
    ]) {
      expect(parseForwarded(l), l).toEqual({ ok: false, reason: 'malformed' });
    }
  });
});

describe('hostapd STATUS: the SSID of an interface', () => {
  // As hostapd 2.10 prints it for a radio with two BSSes (wlan0 and the virtual wlan0-1).
  const status = 'state=ENABLED\nphy=phy0\nfreq=5180\nnum_sta_non_erp=0\nbss[0]=wlan0\nbssid[0]=02:00:00:00:01:00\nssid[0]=Office\nnum_sta[0]=3\nbss[1]=wlan0-1\nbssid[1]=06:00:00:00:01:00\nssid[1]=Guest\nnum_sta[1]=1\n';
  it('takes the BSS named like the control socket, else ssid[0]', () => {
    expect(parseStatusSsid(status, 'wlan0')).toBe('Office');
    expect(parseStatusSsid(status, 'wlan0-1')).toBe('Guest');
    expect(parseStatusSsid(status, 'wlan9')).toBe('Office');
  });
  it('no SSID in the reply (an older hostapd, UNKNOWN COMMAND, FAIL): undefined, never a guess', () => {
    for (const r of ['UNKNOWN COMMAND\n', 'FAIL\n', '', 'state=ENABLED\nssid[0]=\n']) expect(parseStatusSsid(r, 'wlan0'), r).toBeUndefined();
  });
});
