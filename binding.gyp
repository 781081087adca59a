{
  "targets": [
    {
      "target_name": "ferry_native",
      "sources": ["shared/native/addon/ferry_native.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags_c": ["-std=c11", "-O2", "-Wall", "-Wextra"],
      "libraries": ["-lxxhash"]
    },
    {
      "target_name": "ferry_pager",
      "type": "executable",
      "sources": ["native/pager/ferry-pager.c"],
      "cflags_c": ["-std=c11", "-O2", "-Wall", "-Wextra", "-pthread"],
      "ldflags": ["-pthread"],
      "libraries": ["-lxxhash", "-lpthread"]
    }
  ]
}
