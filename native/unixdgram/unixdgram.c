/*
 * AF_UNIX SOCK_DGRAM sockets for Node, as a Node-API addon: Node's dgram
 * module speaks only UDP, and hostapd's control interface is a Unix datagram
 * socket (a client binds its own path and the daemon answers to it). This file
 * does only the system calls; framing, timeouts, re-attach and the protocol
 * live in TypeScript (firmware-bridge/wifi/unix-dgram.ts).
 *
 * socket() -> fd                        non-blocking, close-on-exec
 * bind(fd, path) / connect(fd, path)
 * send(fd, buffer[, path]) -> bytes     send() when connected, sendto(path) else
 * recv(fd) -> { data, from } | null     null: nothing waiting (EAGAIN)
 * close(fd)
 * watch(fd, fn) -> handle               fn() whenever fd is readable (libuv poll)
 * unwatch(handle)                       stop and free the poll
 *
 * Errors are thrown with `code` set to the errno name (ENOENT, ECONNREFUSED …).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, "UNIX_DGRAM_NAPI", #call " failed"); return NULL; } } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[200];
  const char *name = strerrorname_np(err);
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, name ? name : "EUNKNOWN", msg);
  return NULL;
}

static int arg_fd(napi_env env, napi_value v, int *fd) {
  int32_t n;
  if (napi_get_value_int32(env, v, &n) != napi_ok || n < 0) { napi_throw_type_error(env, "EINVAL", "fd must be a non-negative integer"); return -1; }
  *fd = n;
  return 0;
}

/* path -> sockaddr_un; a path that does not fit is refused, never truncated. */
static int arg_addr(napi_env env, napi_value v, struct sockaddr_un *sa, socklen_t *len) {
  size_t n = 0;
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) { napi_throw_type_error(env, "EINVAL", "path must be a string"); return -1; }
  if (n == 0 || n >= sizeof sa->sun_path) { napi_throw_error(env, "ENAMETOOLONG", "socket path empty or longer than 107 bytes"); return -1; }
  napi_get_value_string_utf8(env, v, sa->sun_path, sizeof sa->sun_path, &n);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}

static napi_value js_socket(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  napi_value out;
  CHECK(napi_create_int32(env, fd, &out));
  return out;
}

static napi_value addr_call(napi_env env, napi_callback_info info, int is_bind) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  struct sockaddr_un sa;
  socklen_t len;
  if (argc < 2 || arg_fd(env, argv[0], &fd) || arg_addr(env, argv[1], &sa, &len)) return NULL;
  int r = is_bind ? bind(fd, (struct sockaddr *)&sa, len) : connect(fd, (struct sockaddr *)&sa, len);
  if (r != 0) return throw_errno(env, is_bind ? "bind" : "connect", errno);
  return NULL;
}
static napi_value js_bind(napi_env env, napi_callback_info info) { return addr_call(env, info, 1); }
static napi_value js_connect(napi_env env, napi_callback_info info) { return addr_call(env, info, 0); }

static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  void *data;
  size_t n;
  if (argc < 2 || arg_fd(env, argv[0], &fd)) return NULL;
  if (napi_get_buffer_info(env, argv[1], &data, &n) != napi_ok) { napi_throw_type_error(env, "EINVAL", "data must be a Buffer"); return NULL; }
  ssize_t r;
  napi_valuetype t = napi_undefined;
  if (argc >= 3) napi_typeof(env, argv[2], &t);
  if (t == napi_string) {
    struct sockaddr_un sa;
    socklen_t len;
    if (arg_addr(env, argv[2], &sa, &len)) return NULL;
    r = sendto(fd, data, n, MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
  } else {
    r = send(fd, data, n, MSG_NOSIGNAL);
  }
  if (r < 0) return throw_errno(env, "send", errno);
  napi_value out;
  CHECK(napi_create_int64(env, (int64_t)r, &out));
  return out;
}

static napi_value js_recv(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  if (argc < 1 || arg_fd(env, argv[0], &fd)) return NULL;
  /* hostapd's replies fit in 4 KiB (STA-FIRST with full details); 64 KiB is the datagram ceiling anyway. */
  static char buf[65536];
  struct sockaddr_un from;
  socklen_t flen = sizeof from;
  memset(&from, 0, sizeof from);
  ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
  napi_value out;
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) { CHECK(napi_get_null(env, &out)); return out; }
    return throw_errno(env, "recv", errno);
  }
  napi_value data, path;
  CHECK(napi_create_buffer_copy(env, (size_t)r, buf, NULL, &data));
  size_t plen = flen > offsetof(struct sockaddr_un, sun_path) ? strnlen(from.sun_path, flen - offsetof(struct sockaddr_un, sun_path)) : 0;
  /* an abstract or unnamed peer has no path to answer to: reported as "" */
  if (plen > 0 && from.sun_path[0] == '\0') plen = 0;
  CHECK(napi_create_string_utf8(env, from.sun_path, plen, &path));
  CHECK(napi_create_object(env, &out));
  CHECK(napi_set_named_property(env, out, "data", data));
  CHECK(napi_set_named_property(env, out, "from", path));
  return out;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  if (argc < 1 || arg_fd(env, argv[0], &fd)) return NULL;
  if (close(fd) != 0) return throw_errno(env, "close", errno);
  return NULL;
}

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref fn;
  napi_async_context ctx;
  int stopped;
} watch_t;

static void on_closed(uv_handle_t *h) { free(h->data); }

static void on_readable(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  watch_t *w = p->data;
  if (w->stopped) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, result;
  /* make_callback (recv must be an object: the global) runs the microtasks fn queued,
     and reports what it throws as an uncaught exception */
  if (napi_get_reference_value(env, w->fn, &fn) == napi_ok && fn && napi_get_global(env, &recv) == napi_ok) {
    napi_make_callback(env, w->ctx, recv, fn, 0, NULL, &result);
  }
  napi_close_handle_scope(env, scope);
}

static napi_value js_watch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int fd;
  if (argc < 2 || arg_fd(env, argv[0], &fd)) return NULL;
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  watch_t *w = calloc(1, sizeof *w);
  if (!w) return throw_errno(env, "calloc", ENOMEM);
  w->env = env;
  napi_value name;
  CHECK(napi_create_string_utf8(env, "UnixDgramWatch", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, NULL, name, &w->ctx));
  CHECK(napi_create_reference(env, argv[1], 1, &w->fn));
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r == 0) r = uv_poll_start(&w->poll, UV_READABLE, on_readable);
  if (r != 0) {
    napi_delete_reference(env, w->fn);
    napi_async_destroy(env, w->ctx);
    free(w);
    napi_throw_error(env, uv_err_name(r), uv_strerror(r));
    return NULL;
  }
  w->poll.data = w;
  napi_value out;
  CHECK(napi_create_external(env, w, NULL, NULL, &out));
  return out;
}

static napi_value js_unwatch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  watch_t *w = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&w) != napi_ok || !w) { napi_throw_type_error(env, "EINVAL", "not a watch handle"); return NULL; }
  if (w->stopped) return NULL;
  w->stopped = 1;
  uv_poll_stop(&w->poll);
  napi_delete_reference(env, w->fn);
  napi_async_destroy(env, w->ctx);
  /* the handle is freed by libuv's close callback (the external keeps only a dangling-safe flag check) */
  uv_close((uv_handle_t *)&w->poll, on_closed);
  return NULL;
}

/* unref(handle, bool): a watched socket keeps the process alive only when asked to. */
static napi_value js_ref(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  watch_t *w = NULL;
  bool on = true;
  if (argc < 2 || napi_get_value_external(env, argv[0], (void **)&w) != napi_ok || !w) { napi_throw_type_error(env, "EINVAL", "not a watch handle"); return NULL; }
  napi_get_value_bool(env, argv[1], &on);
  if (w->stopped) return NULL;
  if (on) uv_ref((uv_handle_t *)&w->poll);
  else uv_unref((uv_handle_t *)&w->poll);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"socket", NULL, js_socket, NULL, NULL, NULL, napi_default, NULL},
    {"bind", NULL, js_bind, NULL, NULL, NULL, napi_default, NULL},
    {"connect", NULL, js_connect, NULL, NULL, NULL, napi_default, NULL},
    {"send", NULL, js_send, NULL, NULL, NULL, napi_default, NULL},
    {"recv", NULL, js_recv, NULL, NULL, NULL, napi_default, NULL},
    {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
    {"watch", NULL, js_watch, NULL, NULL, NULL, napi_default, NULL},
    {"unwatch", NULL, js_unwatch, NULL, NULL, NULL, napi_default, NULL},
    {"ref", NULL, js_ref, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
