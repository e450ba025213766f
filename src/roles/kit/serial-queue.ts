/**
 * The one serial queue every role uses for "one conversation at a time"
 * (a module's UART, an enrolment, faces and cards in arrival order). It lives in src/util (the outbox, vault, intake and drivers use it too),
 * re-exported so roles depend on the kit.
 */
export { SerialQueue } from '../../util/serial-queue.js';
