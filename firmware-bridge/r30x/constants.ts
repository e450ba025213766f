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
  /** Upload the image buffer (image data packets). The agent never sends it: R30xDriver refuses. */
  UpImage: 0x0a,
  /** Download an image into the image buffer. Refused by R30xDriver, like UpImage. */
  DownImage: 0x0b,
  DeletChar: 0x0c,
  Empty: 0x0d,
  SetSysPara: 0x0e,
  ReadSysPara: 0x0f,
  SetPwd: 0x12,
  VfyPwd: 0x13,
  /** 4 random bytes from the module's generator. */
  GetRandomCode: 0x14,
  /** New module address (4); the ack already comes from the new address. */
  SetAdder: 0x15,
  /** Notepad: 16 pages × 32 bytes of user flash. */
  WriteNotepad: 0x18,
  ReadNotepad: 0x19,
  HighSpeedSearch: 0x1b,
  TemplateNum: 0x1d,
  ReadIndexTable: 0x1f,
  /** R503 family: abort AutoEnroll/AutoIdentify. */
  Cancel: 0x30,
  /** R503 family: the whole enrolment in one instruction, one ack per step. */
  AutoEnroll: 0x31,
  /** R503 family: capture + search in one instruction, one ack per step. */
  AutoIdentify: 0x32,
  /** R503 LED ring; the CircuitPython client sends it, so the simulator acks it. */
  AuraLedConfig: 0x35,
  /** R502/R503: 00 = sensor normal, 29 = sensor abnormal. */
  CheckSensor: 0x36,
  /** R502/R503: 46 bytes of product information. */
  ReadProdInfo: 0x3c,
  /** R502/R503: ack, reset, then the 0x55 handshake byte. */
  SoftRst: 0x3d,
  /** R502/R503 HandShake: 00 = the module works (the simulator's choice; AS608's GetEcho is 0x53). */
  HandShake: 0x40,
  /** "Handshake" on some modules; the CircuitPython client expects confirmation 0x55. */
  GetEcho: 0x53,
} as const;
export type InstructionName = keyof typeof Instruction;
export type InstructionCode = (typeof Instruction)[InstructionName];

export const INSTRUCTION_NAMES: ReadonlyMap<number, InstructionName> = new Map((Object.entries(Instruction) as [InstructionName, number][]).map(([name, code]) => [code, name]));

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
  /** WriteNotepad/ReadNotepad page outside 0..15. */
  BAD_NOTEPAD_PAGE: 0x1c,
  /** AutoEnroll: enrolment failed (e.g. the captures did not combine). */
  AUTO_ENROLL_FAILED: 0x1e,
  /** AutoEnroll: the library is full. */
  LIBRARY_FULL: 0x1f,
  /** AutoEnroll: the page already holds a template and overwriting was not allowed. */
  TEMPLATE_NOT_EMPTY: 0x22,
  /** AutoEnroll/AutoIdentify: no finger within the module's wait. */
  OPERATION_TIMEOUT: 0x26,
  /** AutoEnroll: this finger is already enrolled and duplicates were not allowed. */
  ALREADY_EXISTS: 0x27,
  /** CheckSensor: the sensor is abnormal. */
  SENSOR_ABNORMAL: 0x29,
  /** GetEcho reply: "module ready". */
  HANDSHAKE_OK: 0x55,
} as const;
export type ConfirmationName = keyof typeof Confirmation;

const CONFIRMATION_NAMES: ReadonlyMap<number, ConfirmationName> = new Map((Object.entries(Confirmation) as [ConfirmationName, number][]).map(([name, code]) => [code, name]));

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

/**
 * The 0x55 byte the module sends, outside any frame, once it is ready after
 * power-up and after SoftRst. Hosts that wait for it read one raw byte.
 */
export const HANDSHAKE_BYTE = 0x55;

/** Notepad geometry (WriteNotepad/ReadNotepad). */
export const NOTEPAD_PAGES = 16;
export const NOTEPAD_PAGE_BYTES = 32;
/** ReadProdInfo payload after the confirmation code. */
export const PROD_INFO_BYTES = 46;
/** Image of a 256 × 288 sensor (R307/AS608) uploaded at 4 bits a pixel: two pixels a byte. */
export const IMAGE_WIDTH = 256;
export const IMAGE_HEIGHT = 288;
export const IMAGE_SIZE = (IMAGE_WIDTH * IMAGE_HEIGHT) / 2;
/** Baud rate = 9600 × N, N 1..12 (SetSysPara parameter 4, ReadSysPara word 7). */
export const BAUD_UNIT = 9600;
export function baudRateFromN(n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > 12) throw new RangeError(`baud N ${n} is not 1..12`);
  return n * BAUD_UNIT;
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
