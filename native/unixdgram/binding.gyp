{
  "targets": [
    {
      "target_name": "unixdgram",
      "sources": ["unixdgram.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
