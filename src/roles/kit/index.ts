/**
 * The shared role kit. A new device role (C1 presence, P1 printing) is a
 * short file on top of it, e.g. a C1 role:
 *
 *   const gate = running.gate;                        // from startRole: one per device
 *   for (const src of sources)                        // hostapd socket, dnsmasq leases (firmware-bridge/wifi)
 *     supervisors.push(new PeripheralSupervisor({ peripheral: presenceSourcePeripheral({ source: src, name: `wifi:${src.description}` }), sink: agent }));
 *   source.on('join', async ({ mac }) => {            // MAC: personal data, never logged
 *     supervisor.alive();
 *     for (const who of await vault.identifyCredential('wifi', mac)) await gate.submit({ ...who, method: PunchMethod.PUNCH_METHOD_WIFI });
 *   });
 *   attachRole({ agent, participant: role, gate, tag: 'c1', enrol: { modality: 'wifi', run: … } });
 *
 * and a case in src/roles/start.ts. Nothing else: no reconnect loop, no
 * repeat window, no queue of its own.
 */
export { attachRole, type AttachRoleOptions, type RoleAgentHooks } from './attach.js';
export { Backoff, type BackoffOptions } from './backoff.js';
export { cardReaderPeripheral, faceModulePeripheral, presenceSourcePeripheral, printerPeripheral } from './peripherals.js';
export { PunchGate, type GateVerdict, type PunchGateOptions, type PunchRequest } from './punch-gate.js';
export { SerialQueue } from './serial-queue.js';
export { PERIPHERAL_TRANSITIONS, PeripheralSupervisor, errorCode, type FaultKind, type PeripheralStatus, type SupervisedPeripheral } from './supervisor.js';
