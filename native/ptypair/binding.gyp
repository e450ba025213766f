{
  "targets": [
    {
      "target_name": "ptypair",
      "sources": ["ptypair.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "libraries": ["-lutil"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
