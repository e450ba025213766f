/*
 * The one system call Node cannot make for a USB printer-class device file
 * (/dev/usb/lpN, the kernel's usblp driver): ioctl(LPGETSTATUS), which returns
 * the IEEE 1284 port status byte the printer reports (paper empty, selected,
 * not-error, busy). Everything else (open, write, retry) is ordinary Node fs
 * in firmware-bridge/printer/usblp.ts.
 *
 * getStatus(fd) -> number   the status byte (LP_POUTPA 0x20 paper out, LP_PSELECD
 *                            0x10 selected, LP_PERRORP 0x08 no error (active low),
 *                            LP_PBUSY 0x80 not busy (inverted))
 * Errors are thrown with `code` set to the errno name: ENOTTY for a file that
 * is not an lp device (a FIFO, a pty), ENODEV when the printer was unplugged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/lp.h>
#include <node_api.h>

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[200];
  const char *name = strerrorname_np(err);
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, name ? name : "EUNKNOWN", msg);
  return NULL;
}

static napi_value js_get_status(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "fd must be a non-negative integer");
    return NULL;
  }
  int status = 0;
  if (ioctl(fd, LPGETSTATUS, &status) < 0) return throw_errno(env, "ioctl(LPGETSTATUS)", errno);
  napi_value out;
  if (napi_create_int32(env, status, &out) != napi_ok) return NULL;
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "getStatus", NAPI_AUTO_LENGTH, js_get_status, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "getStatus", fn) != napi_ok) return NULL;
  return exports;
}
