/**
 * R30x / ZFM / AS608 protocol constants (reference: shared device-protocols §1).
 * Names follow the datasheet so a reader can grep the datasheet for them.
 */

export const START_CODE = 0xef01;
export const DEFAULT_ADDRESS = 0xffffffff;
/** Start(2) + address(4) + PID(1) + LEN(2). */
export const HEADER_LENGTH = 9;
export const CHECKSUM_LENGTH = 2;

export const Pid = {
  COMMAND: 0x01,
  DATA: 0x02,
  ACK: 0x07,
  END_DATA: 0x08,
} as const;
export type PidValue = (typeof Pid)[keyof typeof Pid];
export const PID_VALUES: ReadonlySet<number> = new Set(Object.values(Pid));

export const Instruction = {
  GenImg: 0x01,
  Img2Tz: 0x02,
  Match: 0x03,
  Search: 0x04,
  RegModel: 0x05,
  Store: 0x06,
  LoadChar: 0x07,
  UpChar: 0x08,
  DownChar: 0x09,
  DeletChar: 0x0c,
  Empty: 0x0d,
  SetSysPara: 0x0e,
  ReadSysPara: 0x0f,
  SetPwd: 0x12,
  VfyPwd: 0x13,
  HighSpeedSearch: 0x1b,
  TemplateNum: 0x1d,
  ReadIndexTable: 0x1f,
  /** R503 LED ring; the CircuitPython client sends it, so the simulator acks it. */
  AuraLedConfig: 0x35,
  /** "Handshake" on some modules; the CircuitPython client expects confirmation 0x55. */
  GetEcho: 0x53,
} as const;
export type InstructionName = keyof typeof Instruction;
export type InstructionCode = (typeof Instruction)[InstructionName];

export const INSTRUCTION_NAMES: ReadonlyMap<number, InstructionName> = new Map(
  (Object.entries(Instruction) as [InstructionName, number][]).map(([name, code]) => [code, name]),
);

/** Confirmation codes (first content byte of every ack), named for `R30xError.code`. */
export const Confirmation = {
  OK: 0x00,
  RECEIVE_ERROR: 0x01,
  NO_FINGER: 0x02,
  IMAGE_FAILED: 0x03,
  IMAGE_MESSY: 0x06,
  TOO_FEW_FEATURES: 0x07,
  NO_MATCH: 0x08,
  NOT_FOUND: 0x09,
  COMBINE_FAILED: 0x0a,
  BAD_PAGE: 0x0b,
  BAD_TEMPLATE: 0x0c,
  TEMPLATE_UPLOAD_ERROR: 0x0d,
  CANNOT_RECEIVE_DATA: 0x0e,
  IMAGE_UPLOAD_ERROR: 0x0f,
  DELETE_FAILED: 0x10,
  CLEAR_FAILED: 0x11,
  WRONG_PASSWORD: 0x13,
  NO_VALID_IMAGE: 0x15,
  FLASH_ERROR: 0x18,
  UNDEFINED_ERROR: 0x19,
  INVALID_REGISTER: 0x1a,
  ADDRESS_ERROR: 0x20,
  MUST_VERIFY_PASSWORD: 0x21,
  /** GetEcho reply: "module ready". */
  HANDSHAKE_OK: 0x55,
} as const;
export type ConfirmationName = keyof typeof Confirmation;

const CONFIRMATION_NAMES: ReadonlyMap<number, ConfirmationName> = new Map(
  (Object.entries(Confirmation) as [ConfirmationName, number][]).map(([name, code]) => [code, name]),
);

/** Name of a confirmation code; unknown values become `UNKNOWN_0xNN` so errors still name them. */
export function confirmationName(code: number): ConfirmationName | `UNKNOWN_0x${string}` {
  return CONFIRMATION_NAMES.get(code) ?? `UNKNOWN_0x${code.toString(16).padStart(2, '0').toUpperCase()}`;
}

/** Data packet size code (ReadSysPara word 6, SetSysPara parameter 6) → bytes per data packet. */
export const PACKET_SIZES = [32, 64, 128, 256] as const;
export function packetSizeFromCode(code: number): number {
  const size = PACKET_SIZES[code];
  if (size === undefined) throw new RangeError(`packet size code ${code} is not 0..3`);
  return size;
}

/** Uploaded template (char file) size for this family. */
export const TEMPLATE_SIZE = 512;
/** Each ReadIndexTable page covers 256 library pages in a 32-byte bitmap. */
export const INDEX_TABLE_BYTES = 32;
export const PAGES_PER_INDEX_TABLE = 256;

/**
 * Largest LEN the codec accepts: a 256-byte data packet plus checksum, with
 * headroom for vendor extensions. Anything bigger is noise that happens to
 * start with EF 01 and must not make us allocate or wait for it.
 */
export const DEFAULT_MAX_LEN = 512;
