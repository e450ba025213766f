// The contract, re-exported with short names. Generated code lives in src/gen
// (scripts/gen-proto.mjs); nothing else in the agent imports it directly.
import { tallybox } from '../gen/tallybox.js';

export const pb = tallybox.v1;
export type PunchEvent = tallybox.v1.PunchEvent;
export type PunchEventProps = tallybox.v1.PunchEvent.$Properties;
export type DeviceState = tallybox.v1.DeviceState;
export type DeviceStateProps = tallybox.v1.DeviceState.$Properties;
export type SignedCommand = tallybox.v1.SignedCommand;
export type CommandBody = tallybox.v1.CommandBody;
export type CommandBodyProps = tallybox.v1.CommandBody.$Properties;
export type CommandResult = tallybox.v1.CommandResult;
export type CommandResultProps = tallybox.v1.CommandResult.$Properties;
export const PunchMethod = tallybox.v1.PunchMethod;
export type PunchMethod = tallybox.v1.PunchMethod;
export const ScoreBucket = tallybox.v1.ScoreBucket;
export type ScoreBucket = tallybox.v1.ScoreBucket;
export const Lifecycle = tallybox.v1.Lifecycle;
export type Lifecycle = tallybox.v1.Lifecycle;
export const ClockStatus = tallybox.v1.ClockStatus;
export type ClockStatus = tallybox.v1.ClockStatus;
export const AlarmCode = tallybox.v1.AlarmCode;
export type AlarmCode = tallybox.v1.AlarmCode;
export const ResultCode = tallybox.v1.ResultCode;
export type ResultCode = tallybox.v1.ResultCode;
export const PROTO_VERSION = 'tallybox.v1';
