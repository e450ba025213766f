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
// Signed commands (vault issue): the command payloads and their enums.
export type SubjectUpsert = tallybox.v1.SubjectUpsert;
export type SubjectUpsertProps = tallybox.v1.SubjectUpsert.$Properties;
export type SubjectErase = tallybox.v1.SubjectErase;
export type SubjectEraseProps = tallybox.v1.SubjectErase.$Properties;
export type OrgWithdraw = tallybox.v1.OrgWithdraw;
export type OrgWithdrawProps = tallybox.v1.OrgWithdraw.$Properties;
export type RosterSync = tallybox.v1.RosterSync;
export type RosterSyncProps = tallybox.v1.RosterSync.$Properties;
export type ConfigPatch = tallybox.v1.ConfigPatch;
export type ConfigPatchProps = tallybox.v1.ConfigPatch.$Properties;
export type ServedOrgsSet = tallybox.v1.ServedOrgsSet;
export type ServedOrgsSetProps = tallybox.v1.ServedOrgsSet.$Properties;
export type Consent = tallybox.v1.Consent;
export type ConsentProps = tallybox.v1.Consent.$Properties;
export type Credential = tallybox.v1.Credential;
export type CredentialProps = tallybox.v1.Credential.$Properties;
export type SignedCommandProps = tallybox.v1.SignedCommand.$Properties;
export const ConsentKind = tallybox.v1.ConsentKind;
export type ConsentKind = tallybox.v1.ConsentKind;
export const Modality = tallybox.v1.Modality;
export type Modality = tallybox.v1.Modality;
export const CredentialKind = tallybox.v1.CredentialKind;
export type CredentialKind = tallybox.v1.CredentialKind;
// Link state in DeviceState (link issue).
export const LinkStatus = tallybox.v1.LinkStatus;
export type LinkStatus = tallybox.v1.LinkStatus;
export const LinkTransport = tallybox.v1.LinkTransport;
export type LinkTransport = tallybox.v1.LinkTransport;
// Decommission and incident records (decom issue, 330-359).
export type DeviceDecommission = tallybox.v1.DeviceDecommission;
export type IncidentAck = tallybox.v1.IncidentAck;
export type IncidentReportProps = tallybox.v1.IncidentReport.$Properties;
export const IncidentKind = tallybox.v1.IncidentKind;
export type IncidentKind = tallybox.v1.IncidentKind;
// C1 Wi-Fi enrolment mode (issue 11, fields 240-259).
export const WifiEnrolmentState = tallybox.v1.WifiEnrolmentState;
export type WifiEnrolmentState = tallybox.v1.WifiEnrolmentState;
export type WifiEnrolmentOutcomeProps = tallybox.v1.WifiEnrolmentOutcome.$Properties;
// P1 print box (spool issue 12): print commands and job status.
export type PrintJob = tallybox.v1.PrintJob;
export type PrintJobProps = tallybox.v1.PrintJob.$Properties;
export type CancelJob = tallybox.v1.CancelJob;
export type ReprintJob = tallybox.v1.ReprintJob;
export type PrintJobStatusProps = tallybox.v1.PrintJobStatus.$Properties;
export type PrinterSummaryProps = tallybox.v1.PrinterSummary.$Properties;
export const PrintDocumentFormat = tallybox.v1.PrintDocumentFormat;
export type PrintDocumentFormat = tallybox.v1.PrintDocumentFormat;
export const PrintJobState = tallybox.v1.PrintJobState;
export type PrintJobState = tallybox.v1.PrintJobState;
