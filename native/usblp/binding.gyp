{
  "targets": [
    {
      "target_name": "usblp",
      "sources": ["usblp.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
