/**
 * The one serial queue every role uses for "one conversation at a time"
 * (a module's UART, an enrolment, faces and cards in arrival order). It is the
 * outbox's queue, re-exported so roles depend on the kit, not on the outbox.
 */
export { SerialQueue } from '../../outbox/serial-queue.js';
