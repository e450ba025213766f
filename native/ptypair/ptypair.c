/*
 * openpty(3) for Node, as a Node-API addon: the one system call the serial
 * simulators need that Node itself does not offer. Everything else (reading
 * and writing the master through libuv, the symlink, hangup) is done in
 * TypeScript (simulators/lib/pty.ts), so this file stays small enough to read.
 *
 * open() -> { master: fd, slave: fd, path: "/dev/pts/N" }
 *   - the slave is in raw mode (cfmakeraw: no echo, no line editing, no CR/LF
 *     translation, 8 data bits), as `socat PTY,raw,echo=0` made it;
 *   - both descriptors are close-on-exec, so a child process never keeps the
 *     pty alive (a kept slave would hide a hangup from the host);
 *   - the master is non-blocking, which libuv needs to poll it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <node_api.h>

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, "PTY_OPEN_FAILED", msg);
  return NULL;
}

static int set_fd_flag(int fd, int get, int set, int flag) {
  int flags = fcntl(fd, get);
  if (flags < 0) return -1;
  return fcntl(fd, set, flags | flag);
}

static napi_value open_pty(napi_env env, napi_callback_info info) {
  (void)info;
  int master = -1, slave = -1;
  char name[128];
  if (openpty(&master, &slave, name, NULL, NULL) != 0) return throw_errno(env, "openpty", errno);
  struct termios tio;
  const char *step = NULL;
  if (tcgetattr(slave, &tio) != 0) step = "tcgetattr";
  else {
    cfmakeraw(&tio);
    tio.c_cflag |= CLOCAL | CREAD;
    if (tcsetattr(slave, TCSANOW, &tio) != 0) step = "tcsetattr";
    else if (set_fd_flag(master, F_GETFD, F_SETFD, FD_CLOEXEC) != 0 || set_fd_flag(slave, F_GETFD, F_SETFD, FD_CLOEXEC) != 0) step = "fcntl(FD_CLOEXEC)";
    else if (set_fd_flag(master, F_GETFL, F_SETFL, O_NONBLOCK) != 0) step = "fcntl(O_NONBLOCK)";
  }
  if (step) {
    int err = errno;
    close(master);
    close(slave);
    return throw_errno(env, step, err);
  }
  napi_value result, v;
  napi_create_object(env, &result);
  napi_create_int32(env, master, &v);
  napi_set_named_property(env, result, "master", v);
  napi_create_int32(env, slave, &v);
  napi_set_named_property(env, result, "slave", v);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, result, "path", v);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "open", NAPI_AUTO_LENGTH, open_pty, NULL, &fn);
  napi_set_named_property(env, exports, "open", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
