/**
 * Topic layout, one place. Payloads are protobuf (proto/tallybox/v1):
 *   tallybox/v1/{org}/{device}/punch   PunchEvent     QoS 1, device → cloud
 *   tallybox/v1/{org}/{device}/state   DeviceState    QoS 1, retained, also the MQTT will (DEATH)
 *   tallybox/v1/{org}/{device}/cmd     SignedCommand  QoS 1, cloud → device
 *   tallybox/v1/{org}/{device}/result  CommandResult  QoS 1, device → cloud
 *   tallybox/v1/{org}/{device}/incident IncidentReport QoS 1, device → cloud, re-sent until an IncidentAck
 * A punch goes to the topic of the subject's organisation; state, cmd and
 * result use the organisation operating the device (and cmd any org).
 */
export const TOPIC_ROOT = 'tallybox/v1';

export type TopicKind = 'punch' | 'state' | 'cmd' | 'result' | 'incident';

export function topic(orgId: string, deviceId: string, kind: TopicKind): string {
  return `${TOPIC_ROOT}/${orgId}/${deviceId}/${kind}`;
}

/** Commands may come from any organisation the device serves. */
export function commandFilter(deviceId: string): string {
  return `${TOPIC_ROOT}/+/${deviceId}/cmd`;
}

export function parseTopic(t: string): { orgId: string; deviceId: string; kind: TopicKind } | undefined {
  const m = /^tallybox\/v1\/([^/]+)\/([^/]+)\/(punch|state|cmd|result|incident)$/.exec(t);
  return m ? { orgId: m[1]!, deviceId: m[2]!, kind: m[3] as TopicKind } : undefined;
}
