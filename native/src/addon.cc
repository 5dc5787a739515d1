// Module entry: classes, connect(), the aio completion dispatcher.
#include "common.h"

namespace pumice {

void RegisterFiles(Napi::Env env, Napi::Object exports);  // files.cc

static Napi::Value ErrnoNameJs(const Napi::CallbackInfo& info) {
  int e = info[0].As<Napi::Number>().Int32Value();
  return Napi::String::New(info.Env(), ErrnoName(e));
}

static Napi::Value Versions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int a = 0, b = 0, c = 0;
  Napi::Object o = Napi::Object::New(env);
  rbd_version(&a, &b, &c);
  o.Set("librbd", std::to_string(a) + "." + std::to_string(b) + "." + std::to_string(c));
  rados_version(&a, &b, &c);
  o.Set("librados", std::to_string(a) + "." + std::to_string(b) + "." + std::to_string(c));
  return o;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);  // deleted with the environment
  Napi::Function cluster = ClusterWrap::Define(env);
  Napi::Function ioctx = IoctxWrap::Define(env);
  Napi::Function image = ImageWrap::Define(env);
  data->clusterCtor = Napi::Persistent(cluster);
  data->ioctxCtor = Napi::Persistent(ioctx);
  data->imageCtor = Napi::Persistent(image);
  data->aioTsfn = AioTsfn::New(env, "pumice_rbd_aio", 0, 1, data);
  data->aioTsfn.Unref(env);  // referenced only while aio is in flight
  exports.Set("Cluster", cluster);
  exports.Set("Ioctx", ioctx);
  exports.Set("Image", image);
  exports.Set("connect", Napi::Function::New(env, ClusterWrap::Connect, "connect"));
  exports.Set("errnoName", Napi::Function::New(env, ErrnoNameJs, "errnoName"));
  exports.Set("versions", Napi::Function::New(env, Versions, "versions"));
  RegisterFiles(env, exports);
  return exports;
}

}  // namespace pumice

static Napi::Object InitAll(Napi::Env env, Napi::Object exports) { return pumice::Init(env, exports); }

NODE_API_MODULE(pumice_rbd, InitAll)
