{
  "targets": [
    {
      "target_name": "pumice_rbd",
      "sources": [
        "src/addon.cc",
        "src/errors.cc",
        "src/cluster.cc",
        "src/ioctx.cc",
        "src/image.cc",
        "src/objects.cc",
        "src/group.cc",
        "src/files.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-deprecated-declarations"],
      "libraries": ["-lrbd", "-lrados"]
    }
  ]
}
