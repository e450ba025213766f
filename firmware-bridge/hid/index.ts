export { HidCardReader, createCardReader } from './reader.js';
export type { CardReaderConfig, HidCardReaderOptions } from './reader.js';
export { NodeHidTransport, SimHidTransport, udevRule } from './transport.js';
export type { HidReportTransport, HidTransportEvents, NodeHidTransportOptions } from './transport.js';
export { WedgeDecoder, decodeBootReport, usageToChar, cardToReports } from './keyboard.js';
export { SocketHidTransport, frameReport, ReportDeframer } from './socket.js';
