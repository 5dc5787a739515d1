// Error objects and argument helpers.
#include <cerrno>
#include <cmath>
#include <cstring>

#include "common.h"

namespace pumice {

std::string ErrnoName(int err) {
  if (err < 0) err = -err;
  // glibc >= 2.32; Debian 12 has 2.36.
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "E" + std::to_string(err);
}

static std::string Describe(int err) {
  char buf[256];
  // GNU strerror_r returns a pointer (maybe not to buf).
  const char* s = strerror_r(err, buf, sizeof buf);
  return s != nullptr ? s : ("error " + std::to_string(err));
}

Napi::Error MakeError(Napi::Env env, int err, const std::string& operation,
                      const std::string& subject, const std::string& detail) {
  if (err < 0) err = -err;
  std::string code = ErrnoName(err);
  std::string msg = operation;
  if (!subject.empty()) msg += " " + subject;
  msg += ": " + Describe(err) + " (" + code + ")";
  if (!detail.empty()) msg += ": " + detail;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("operation", Napi::String::New(env, operation));
  if (!subject.empty()) e.Set("subject", Napi::String::New(env, subject));
  if (!detail.empty()) e.Set("detail", Napi::String::New(env, detail));
  return e;
}

Napi::Value Rejected(Napi::Env env, int err, const std::string& operation,
                     const std::string& subject, const std::string& detail) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(MakeError(env, err, operation, subject, detail).Value());
  return d.Promise();
}

uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Value v = info[i];
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::TypeError::New(info.Env(), std::string(what) + " out of range");
    return r;
  }
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d)
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a non-negative safe integer");
  return static_cast<uint64_t>(d);
}

bool ArgOptU64(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t* out) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return false;
  *out = ArgU64(info, i, what);
  return true;
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos)
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must not contain NUL");
  return s;
}

bool ArgOptString(const Napi::CallbackInfo& info, size_t i, const char* what, std::string* out) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return false;
  *out = ArgString(info, i, what);
  return true;
}

}  // namespace pumice
