// RADOS cluster handle: connect, fsid, stats, mon_command, pool stats,
// ioctx open, shutdown.
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common.h"

namespace pumice {

Napi::Function ClusterWrap::Define(Napi::Env env) {
  return DefineClass(env, "Cluster",
                     {
                         InstanceMethod<&ClusterWrap::Fsid>("fsid"),
                         InstanceMethod<&ClusterWrap::ClusterStat>("clusterStat"),
                         InstanceMethod<&ClusterWrap::MonCommand>("monCommand"),
                         InstanceMethod<&ClusterWrap::PoolStat>("poolStat"),
                         InstanceMethod<&ClusterWrap::OpenIoctx>("openIoctx"),
                         InstanceMethod<&ClusterWrap::GetAddrs>("getAddrs"),
                         InstanceMethod<&ClusterWrap::InstanceId>("instanceId"),
                         InstanceMethod<&ClusterWrap::OpenHandles>("openHandles"),
                         InstanceMethod<&ClusterWrap::Shutdown>("shutdown"),
                     });
}

ClusterWrap::ClusterWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ClusterWrap>(info) {
  if (info.Length() < 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "use connect() to create a Cluster");
  ClusterPtr* p = info[0].As<Napi::External<ClusterPtr>>().Data();
  st = std::move(*p);
  delete p;
}

ClusterWrap::~ClusterWrap() {
  // Collected without shutdown(): the handle goes once every child is gone.
  DropOffThread(st);
}

Task* ClusterWrap::NewTask(Napi::Env env, const std::string& op, const std::string& subject,
                           Task::Run run, Task::Build build) {
  lc.pending++;
  auto* t = new Task(env, op, subject, std::move(run), std::move(build),
                     [this]() { lc.pending--; });
  t->Hold(Value());
  return t;
}

#define CLUSTER_GUARD(op)                                                        \
  if (!lc.Usable()) return Rejected(info.Env(), ESHUTDOWN, op, "", "cluster handle is shut down")

// connect({ confPath, name, keyringPath?, config?: {key: value} })
Napi::Value ClusterWrap::Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject())
    throw Napi::TypeError::New(env, "connect(options) needs an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto str = [&](const char* key, bool required) -> std::string {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() || v.IsNull()) {
      if (required) throw Napi::TypeError::New(env, std::string(key) + " is required");
      return "";
    }
    if (!v.IsString()) throw Napi::TypeError::New(env, std::string(key) + " must be a string");
    return v.As<Napi::String>().Utf8Value();
  };
  std::string confPath = str("confPath", true);
  std::string name = str("name", true);
  std::string keyring = str("keyringPath", false);
  std::vector<std::pair<std::string, std::string>> conf;
  if (!keyring.empty()) conf.emplace_back("keyring", keyring);
  Napi::Value cv = o.Get("config");
  if (cv.IsObject()) {
    Napi::Object co = cv.As<Napi::Object>();
    Napi::Array keys = co.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      std::string k = keys.Get(i).ToString().Utf8Value();
      conf.emplace_back(k, co.Get(k).ToString().Utf8Value());
    }
  }

  auto out = std::make_shared<ClusterPtr>();
  AddonData* data = env.GetInstanceData<AddonData>();
  std::string subject = name + " (" + confPath + ")";
  auto* t = new Task(
      env, "rados_create2", subject,
      [out, confPath, name, conf](TaskCtx& ctx) -> int {
        rados_t r = nullptr;
        int rc = rados_create2(&r, "ceph", name.c_str(), 0);
        if (rc < 0) return rc;
        ctx.operation = "rados_conf_read_file";
        rc = rados_conf_read_file(r, confPath.c_str());
        for (size_t i = 0; rc >= 0 && i < conf.size(); i++) {
          ctx.operation = "rados_conf_set";
          rc = rados_conf_set(r, conf[i].first.c_str(), conf[i].second.c_str());
          if (rc < 0) ctx.detail = conf[i].first + "=" + conf[i].second;
        }
        if (rc >= 0) {
          ctx.operation = "rados_connect";
          rc = rados_connect(r);
        }
        if (rc < 0) {
          rados_shutdown(r);
          return rc;
        }
        auto st = std::make_shared<ClusterState>();
        st->rados = r;
        *out = std::move(st);
        return 0;
      },
      [out, data](Napi::Env env) -> Napi::Value {
        auto* p = new ClusterPtr(std::move(*out));
        return data->clusterCtor.New({Napi::External<ClusterPtr>::New(env, p)});
      });
  return t->Start();
}

Napi::Value ClusterWrap::Fsid(const Napi::CallbackInfo& info) {
  CLUSTER_GUARD("rados_cluster_fsid");
  auto st = this->st;
  auto out = std::make_shared<std::string>();
  return NewTask(
             info.Env(), "rados_cluster_fsid", "",
             [st, out](TaskCtx&) -> int {
               char buf[64] = {0};
               int r = rados_cluster_fsid(st->rados, buf, sizeof buf);
               if (r < 0) return r;
               *out = std::string(buf, strnlen(buf, sizeof buf));
               return 0;
             },
             [out](Napi::Env env) -> Napi::Value { return Napi::String::New(env, *out); })
      ->Start();
}

Napi::Value ClusterWrap::ClusterStat(const Napi::CallbackInfo& info) {
  CLUSTER_GUARD("rados_cluster_stat");
  auto st = this->st;
  auto out = std::make_shared<rados_cluster_stat_t>();
  return NewTask(
             info.Env(), "rados_cluster_stat", "",
             [st, out](TaskCtx&) -> int { return rados_cluster_stat(st->rados, out.get()); },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Object o = Napi::Object::New(env);
               o.Set("kb", static_cast<double>(out->kb));
               o.Set("kbUsed", static_cast<double>(out->kb_used));
               o.Set("kbAvail", static_cast<double>(out->kb_avail));
               o.Set("numObjects", static_cast<double>(out->num_objects));
               return o;
             })
      ->Start();
}

// monCommand(json: string, inbuf?: Buffer) -> { outbuf: Buffer, outs: string }
Napi::Value ClusterWrap::MonCommand(const Napi::CallbackInfo& info) {
  CLUSTER_GUARD("rados_mon_command");
  Napi::Env env = info.Env();
  std::string cmd = ArgString(info, 0, "command");
  std::string inbuf;
  if (info.Length() > 1 && info[1].IsBuffer()) {
    auto b = info[1].As<Napi::Buffer<char>>();
    inbuf.assign(b.Data(), b.Length());
  }
  struct Out {
    std::string outbuf, outs;
  };
  auto out = std::make_shared<Out>();
  auto st = this->st;
  // The subject is the command's prefix when it parses, else the whole JSON.
  std::string subject = cmd.size() > 200 ? cmd.substr(0, 200) + "..." : cmd;
  return NewTask(
             env, "rados_mon_command", subject,
             [st, out, cmd, inbuf](TaskCtx& ctx) -> int {
               const char* cmds[1] = {cmd.c_str()};
               char *ob = nullptr, *os = nullptr;
               size_t obl = 0, osl = 0;
               int r = rados_mon_command(st->rados, cmds, 1, inbuf.data(), inbuf.size(), &ob,
                                         &obl, &os, &osl);
               if (ob != nullptr) {
                 out->outbuf.assign(ob, obl);
                 rados_buffer_free(ob);
               }
               if (os != nullptr) {
                 out->outs.assign(os, osl);
                 rados_buffer_free(os);
               }
               if (r < 0) ctx.detail = out->outs;
               return r;
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Object o = Napi::Object::New(env);
               o.Set("outbuf", Napi::Buffer<char>::Copy(env, out->outbuf.data(), out->outbuf.size()));
               o.Set("outs", Napi::String::New(env, out->outs));
               return o;
             })
      ->Start();
}

Napi::Value ClusterWrap::PoolStat(const Napi::CallbackInfo& info) {
  CLUSTER_GUARD("rados_ioctx_pool_stat");
  std::string pool = ArgString(info, 0, "pool");
  auto st = this->st;
  auto out = std::make_shared<rados_pool_stat_t>();
  return NewTask(
             info.Env(), "rados_ioctx_create", pool,
             [st, out, pool](TaskCtx& ctx) -> int {
               rados_ioctx_t io = nullptr;
               int r = rados_ioctx_create(st->rados, pool.c_str(), &io);
               if (r < 0) return r;
               ctx.operation = "rados_ioctx_pool_stat";
               r = rados_ioctx_pool_stat(io, out.get());
               rados_ioctx_destroy(io);
               return r;
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Object o = Napi::Object::New(env);
               auto n = [&](const char* k, uint64_t v) { o.Set(k, static_cast<double>(v)); };
               n("numBytes", out->num_bytes);
               n("numKb", out->num_kb);
               n("numObjects", out->num_objects);
               n("numObjectClones", out->num_object_clones);
               n("numObjectCopies", out->num_object_copies);
               n("numObjectsMissingOnPrimary", out->num_objects_missing_on_primary);
               n("numObjectsUnfound", out->num_objects_unfound);
               n("numObjectsDegraded", out->num_objects_degraded);
               n("numRd", out->num_rd);
               n("numRdKb", out->num_rd_kb);
               n("numWr", out->num_wr);
               n("numWrKb", out->num_wr_kb);
               n("numUserBytes", out->num_user_bytes);
               n("compressedBytesOrig", out->compressed_bytes_orig);
               n("compressedBytes", out->compressed_bytes);
               n("compressedBytesAlloc", out->compressed_bytes_alloc);
               return o;
             })
      ->Start();
}

Napi::Value ClusterWrap::OpenIoctx(const Napi::CallbackInfo& info) {
  CLUSTER_GUARD("rados_ioctx_create");
  std::string pool = ArgString(info, 0, "pool");
  auto st = this->st;
  auto out = std::make_shared<IoctxPtr>();
  return NewTask(
             info.Env(), "rados_ioctx_create", pool,
             [st, out, pool](TaskCtx&) -> int {
               rados_ioctx_t io = nullptr;
               int r = rados_ioctx_create(st->rados, pool.c_str(), &io);
               if (r < 0) return r;
               auto s = std::make_shared<IoctxState>();
               s->cluster = st;
               s->io = io;
               s->pool = pool;
               st->children++;
               *out = std::move(s);
               return 0;
             },
             [out](Napi::Env env) -> Napi::Value { return NewIoctxObject(env, std::move(*out)); })
      ->Start();
}

Napi::Value ClusterWrap::GetAddrs(const Napi::CallbackInfo& info) {
  CLUSTER_GUARD("rados_getaddrs");
  auto st = this->st;
  auto out = std::make_shared<std::string>();
  return NewTask(
             info.Env(), "rados_getaddrs", "",
             [st, out](TaskCtx&) -> int {
               char* a = nullptr;
               int r = rados_getaddrs(st->rados, &a);
               if (a != nullptr) {
                 *out = a;
                 free(a);
               }
               return r;
             },
             [out](Napi::Env env) -> Napi::Value { return Napi::String::New(env, *out); })
      ->Start();
}

Napi::Value ClusterWrap::InstanceId(const Napi::CallbackInfo& info) {
  CLUSTER_GUARD("rados_get_instance_id");
  auto st = this->st;
  auto out = std::make_shared<uint64_t>(0);
  return NewTask(
             info.Env(), "rados_get_instance_id", "",
             [st, out](TaskCtx&) -> int {
               *out = rados_get_instance_id(st->rados);
               return 0;
             },
             [out](Napi::Env env) -> Napi::Value {
               return Napi::Number::New(env, static_cast<double>(*out));
             })
      ->Start();
}

// Number of ioctxs and images still open on this cluster handle (sync).
Napi::Value ClusterWrap::OpenHandles(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), st ? st->children.load() : 0);
}

// Refused with EBUSY while ioctxs/images are open or calls are in flight.
Napi::Value ClusterWrap::Shutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (lc.state == Lifecycle::CLOSED) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Resolve(env.Undefined());
    return d.Promise();
  }
  if (lc.state == Lifecycle::CLOSING) {
    auto d = Napi::Promise::Deferred::New(env);
    lc.waiters.push_back(d);
    return d.Promise();
  }
  int children = st->children.load();
  if (children > 0 || lc.pending > 0) {
    return Rejected(env, EBUSY, "rados_shutdown", "",
                    std::to_string(children) + " ioctx/image handle(s) still open, " +
                        std::to_string(lc.pending) + " call(s) in flight");
  }
  lc.state = Lifecycle::CLOSING;
  auto st = this->st;
  auto* t = new Task(
      env, "rados_shutdown", "",
      [st](TaskCtx&) -> int {
        if (st->rados != nullptr) {
          rados_shutdown(st->rados);
          st->rados = nullptr;
        }
        return 0;
      },
      nullptr,
      [this]() {
        lc.state = Lifecycle::CLOSED;
        for (auto& w : lc.waiters) w.Resolve(Env().Undefined());
        lc.waiters.clear();
      });
  t->Hold(Value());
  return t->Start();
}

}  // namespace pumice
