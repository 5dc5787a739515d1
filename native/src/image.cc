// RBD image handle: metadata and snapshot calls on the thread pool, data
// path (read/write/discard/flush) through librbd aio completions.
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common.h"

namespace pumice {

// ------------------------------------------------------------------ aio --

struct AioOp {
  enum Kind { READ = 0, WRITE = 1, DISCARD = 2, FLUSH = 3, WRITE_ZEROES = 4 };
  int kind = READ;
  const char* opName = "";
  ImageWrap* owner = nullptr;
  Napi::ObjectReference ownerRef;  // keeps the image wrapper alive
  Napi::ObjectReference bufRef;    // caller's Buffer (write source / read target)
  Napi::Promise::Deferred deferred;
  char* data = nullptr;
  bool ownsData = false;  // malloc'd read block, becomes an external Buffer
  uint64_t off = 0;
  size_t len = 0;
  ssize_t ret = 0;  // written by the librbd callback thread before hand-off
  AioTsfn tsfn;

  explicit AioOp(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}

  // JS thread.
  void Finish(Napi::Env env) {
    Napi::HandleScope scope(env);
    owner->addon->AioFinished(env);
    owner->OpDone(env);
    if (ret < 0) {
      deferred.Reject(MakeError(env, static_cast<int>(-ret), opName, owner->st->spec).Value());
    } else if (kind == READ && ownsData) {
      size_t n = static_cast<size_t>(ret);
      if (n > len) n = len;
      char* d = data;
      ownsData = false;
      deferred.Resolve(
          Napi::Buffer<char>::New(env, d, n, [](Napi::Env, char* p) { free(p); }));
    } else if (kind == READ) {
      deferred.Resolve(Napi::Number::New(env, static_cast<double>(ret)));
    } else {
      deferred.Resolve(env.Undefined());
    }
    if (ownsData) free(data);
    delete this;
  }

  // The environment is being torn down: free without touching JS.
  void Abandon() {
    ownerRef.SuppressDestruct();
    bufRef.SuppressDestruct();
    if (ownsData) free(data);
    delete this;
  }
};

// librbd's callback thread.
static void OnAioComplete(rbd_completion_t c, void* arg) {
  AioOp* op = static_cast<AioOp*>(arg);
  op->ret = rbd_aio_get_return_value(c);
  rbd_aio_release(c);
  if (op->tsfn.NonBlockingCall(op) != napi_ok) {
    // napi_closing: the environment is going away; nothing can be resolved.
  }
}

void AioCallJs(Napi::Env env, Napi::Function, AddonData*, AioOp* op) {
  if (op == nullptr) return;
  if (env == nullptr) {
    op->Abandon();
    return;
  }
  op->Finish(env);
}

void AddonData::AioStarted(Napi::Env env) {
  if (aioInflight++ == 0) aioTsfn.Ref(env);
}

void AddonData::AioFinished(Napi::Env env) {
  if (--aioInflight == 0) aioTsfn.Unref(env);
}

// -------------------------------------------------------- progress tasks --

struct Progress {
  uint64_t offset;
  uint64_t total;
};

// Like Task, with a librbd progress callback forwarded (throttled) to JS;
// progress events are drained before the promise settles.
class ProgressTask : public Napi::AsyncProgressQueueWorker<Progress> {
 public:
  using Run = std::function<int(TaskCtx&, librbd_progress_fn_t, void*)>;

  ProgressTask(Napi::Env env, std::string operation, std::string subject, Run run,
               Napi::Value cb, std::function<void()> done)
      : Napi::AsyncProgressQueueWorker<Progress>(env, "pumice_rbd_progress"),
        deferred_(Napi::Promise::Deferred::New(env)),
        subject_(std::move(subject)),
        run_(std::move(run)),
        done_(std::move(done)) {
    ctx_.operation = std::move(operation);
    if (cb.IsFunction()) cb_ = Napi::Persistent(cb.As<Napi::Function>());
  }

  ProgressTask* Hold(Napi::Object o) {
    keep_.emplace_back(Napi::Persistent(o));
    return this;
  }

  Napi::Promise Start() {
    Napi::Promise p = deferred_.Promise();
    Queue();
    return p;
  }

 protected:
  void Execute(const ExecutionProgress& progress) override {
    progress_ = &progress;
    try {
      rc_ = run_(ctx_, &ProgressTask::Fn, this);
    } catch (...) {
      rc_ = -ENOMEM;
    }
    // librbd's last report may have been throttled away or may stop short of
    // the total: on success always end with (total, total).
    if (rc_ >= 0 && !cb_.IsEmpty() && total_ > 0 && sentOffset_ != total_) {
      Progress p{total_, total_};
      progress.Send(&p, 1);
    }
    progress_ = nullptr;
  }

  static int Fn(uint64_t offset, uint64_t total, void* arg) {
    auto* self = static_cast<ProgressTask*>(arg);
    if (self->cb_.IsEmpty() || self->progress_ == nullptr) return 0;
    self->total_ = total;
    auto now = std::chrono::steady_clock::now();
    if (offset < total && now - self->last_ < std::chrono::milliseconds(50)) return 0;
    self->last_ = now;
    self->sentOffset_ = offset;
    Progress p{offset, total};
    self->progress_->Send(&p, 1);
    return 0;
  }

  void OnProgress(const Progress* data, size_t count) override {
    if (cb_.IsEmpty() || data == nullptr) return;
    Napi::Env env = Env();
    for (size_t i = 0; i < count; i++) {
      try {
        cb_.Call({Napi::Number::New(env, static_cast<double>(data[i].offset)),
                  Napi::Number::New(env, static_cast<double>(data[i].total))});
      } catch (const Napi::Error&) {
        // A throwing progress callback does not stop the operation.
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (done_) done_();
    if (rc_ < 0)
      deferred_.Reject(MakeError(env, -rc_, ctx_.operation, subject_, ctx_.detail).Value());
    else
      deferred_.Resolve(env.Undefined());
  }

  void OnError(const Napi::Error& e) override {
    if (done_) done_();
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string subject_;
  Run run_;
  std::function<void()> done_;
  Napi::FunctionReference cb_;
  TaskCtx ctx_;
  int rc_ = 0;
  const ExecutionProgress* progress_ = nullptr;
  std::chrono::steady_clock::time_point last_{};
  uint64_t total_ = 0;
  uint64_t sentOffset_ = UINT64_MAX;
  std::vector<Napi::ObjectReference> keep_;
};

// ---------------------------------------------------------------- class --

Napi::Function ImageWrap::Define(Napi::Env env) {
  return DefineClass(env, "Image",
                     {
                         InstanceMethod<&ImageWrap::Spec>("spec"),
                         InstanceMethod<&ImageWrap::InFlight>("inFlight"),
                         InstanceMethod<&ImageWrap::Stat>("stat"),
                         InstanceMethod<&ImageWrap::Features>("features"),
                         InstanceMethod<&ImageWrap::Resize>("resize"),
                         InstanceMethod<&ImageWrap::SnapCreate>("snapCreate"),
                         InstanceMethod<&ImageWrap::SnapRemove>("snapRemove"),
                         InstanceMethod<&ImageWrap::SnapProtect>("snapProtect"),
                         InstanceMethod<&ImageWrap::SnapUnprotect>("snapUnprotect"),
                         InstanceMethod<&ImageWrap::SnapIsProtected>("snapIsProtected"),
                         InstanceMethod<&ImageWrap::SnapList>("snapList"),
                         InstanceMethod<&ImageWrap::SnapRollback>("snapRollback"),
                         InstanceMethod<&ImageWrap::SnapRename>("snapRename"),
                         InstanceMethod<&ImageWrap::Flatten>("flatten"),
                         InstanceMethod<&ImageWrap::ListChildren>("listChildren"),
                         InstanceMethod<&ImageWrap::ParentInfo>("parentInfo"),
                         InstanceMethod<&ImageWrap::DiffIterate>("diffIterate"),
                         InstanceMethod<&ImageWrap::Read>("read"),
                         InstanceMethod<&ImageWrap::Write>("write"),
                         InstanceMethod<&ImageWrap::Discard>("discard"),
                         InstanceMethod<&ImageWrap::WriteZeroes>("writeZeroes"),
                         InstanceMethod<&ImageWrap::Flush>("flush"),
                         InstanceMethod<&ImageWrap::LockOwners>("lockOwners"),
                         InstanceMethod<&ImageWrap::LockBreak>("lockBreak"),
                         InstanceMethod<&ImageWrap::LockAcquire>("lockAcquire"),
                         InstanceMethod<&ImageWrap::LockRelease>("lockRelease"),
                         InstanceMethod<&ImageWrap::IsExclusiveLockOwner>("isExclusiveLockOwner"),
                         InstanceMethod<&ImageWrap::GetGroup>("getGroup"),
                         InstanceMethod<&ImageWrap::SnapGroupNamespace>("snapGroupNamespace"),
                         InstanceMethod<&ImageWrap::SnapSetById>("snapSetById"),
                         InstanceMethod<&ImageWrap::Close>("close"),
                     });
}

Napi::Object NewImageObject(Napi::Env env, ImagePtr st) {
  AddonData* data = env.GetInstanceData<AddonData>();
  auto* p = new ImagePtr(std::move(st));
  return data->imageCtor.New({Napi::External<ImagePtr>::New(env, p)});
}

ImageWrap::ImageWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ImageWrap>(info) {
  if (info.Length() < 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "use Ioctx.openImage() to create an Image");
  ImagePtr* p = info[0].As<Napi::External<ImagePtr>>().Data();
  st = std::move(*p);
  delete p;
  addon = info.Env().GetInstanceData<AddonData>();
}

ImageWrap::~ImageWrap() {
  // Garbage-collected while open (never with I/O in flight: each operation
  // holds a strong reference): rbd_close on a detached thread.
  DropOffThread(st);
}

void ImageWrap::OpDone(Napi::Env env) {
  lc.pending--;
  if (lc.state == Lifecycle::CLOSING && lc.pending == 0) StartClose(env);
}

Task* ImageWrap::NewTask(Napi::Env env, const std::string& op, Task::Run run, Task::Build build) {
  lc.pending++;
  auto* t = new Task(env, op, st->spec, std::move(run), std::move(build),
                     [this, env]() { OpDone(env); });
  t->Hold(Value());
  return t;
}

#define IMAGE_GUARD(op) \
  if (!lc.Usable()) return Rejected(info.Env(), EBADF, op, st->spec, "image is closed")

Napi::Value ImageWrap::Spec(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), st->spec);
}

Napi::Value ImageWrap::InFlight(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), lc.pending);
}

Napi::Value ImageWrap::Stat(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_stat");
  struct Out {
    rbd_image_info_t info;
    std::string prefix, id;
    int64_t dataPoolId = -1;
    uint64_t stripeUnit = 0, stripeCount = 0;
  };
  auto out = std::make_shared<Out>();
  auto st = this->st;
  return NewTask(
             info.Env(), "rbd_stat",
             [st, out](TaskCtx& ctx) -> int {
               int r = rbd_stat(st->image, &out->info, sizeof out->info);
               if (r < 0) return r;
               char buf[128] = {0};
               ctx.operation = "rbd_get_block_name_prefix";
               r = rbd_get_block_name_prefix(st->image, buf, sizeof buf);
               if (r < 0) return r;
               out->prefix = buf;
               char idbuf[128] = {0};
               ctx.operation = "rbd_get_id";
               r = rbd_get_id(st->image, idbuf, sizeof idbuf);
               if (r < 0) return r;
               out->id = idbuf;
               ctx.operation = "rbd_get_data_pool_id";
               out->dataPoolId = rbd_get_data_pool_id(st->image);
               if (out->dataPoolId < 0) return static_cast<int>(out->dataPoolId);
               ctx.operation = "rbd_get_stripe_unit";
               r = rbd_get_stripe_unit(st->image, &out->stripeUnit);
               if (r < 0) return r;
               ctx.operation = "rbd_get_stripe_count";
               r = rbd_get_stripe_count(st->image, &out->stripeCount);
               if (r < 0) return r;
               return 0;
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Object o = Napi::Object::New(env);
               o.Set("size", static_cast<double>(out->info.size));
               o.Set("objSize", static_cast<double>(out->info.obj_size));
               o.Set("numObjs", static_cast<double>(out->info.num_objs));
               o.Set("order", out->info.order);
               o.Set("blockNamePrefix", out->prefix);
               o.Set("id", out->id);
               o.Set("dataPoolId", static_cast<double>(out->dataPoolId));
               o.Set("stripeUnit", static_cast<double>(out->stripeUnit));
               o.Set("stripeCount", static_cast<double>(out->stripeCount));
               return o;
             })
      ->Start();
}

Napi::Value ImageWrap::Features(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_get_features");
  auto out = std::make_shared<uint64_t>(0);
  auto st = this->st;
  return NewTask(
             info.Env(), "rbd_get_features",
             [st, out](TaskCtx&) -> int { return rbd_get_features(st->image, out.get()); },
             [out](Napi::Env env) -> Napi::Value {
               return Napi::Number::New(env, static_cast<double>(*out));
             })
      ->Start();
}

Napi::Value ImageWrap::Resize(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_resize");
  uint64_t size = ArgU64(info, 0, "size");
  auto st = this->st;
  return NewTask(info.Env(), "rbd_resize",
                 [st, size](TaskCtx&) -> int { return rbd_resize(st->image, size); })
      ->Start();
}

#define SNAP_CALL(Method, opname, call)                                              \
  Napi::Value ImageWrap::Method(const Napi::CallbackInfo& info) {                    \
    IMAGE_GUARD(opname);                                                             \
    std::string snap = ArgString(info, 0, "snapshot");                               \
    auto st = this->st;                                                              \
    return NewTask(info.Env(), opname,                                               \
                   [st, snap](TaskCtx& ctx) -> int {                                 \
                     ctx.detail = "snapshot " + snap;                                \
                     int r = call(st->image, snap.c_str());                          \
                     if (r >= 0) ctx.detail.clear();                                 \
                     return r;                                                       \
                   })                                                                \
        ->Start();                                                                   \
  }

SNAP_CALL(SnapCreate, "rbd_snap_create", rbd_snap_create)
SNAP_CALL(SnapRemove, "rbd_snap_remove", rbd_snap_remove)
SNAP_CALL(SnapProtect, "rbd_snap_protect", rbd_snap_protect)
SNAP_CALL(SnapUnprotect, "rbd_snap_unprotect", rbd_snap_unprotect)
SNAP_CALL(SnapRollback, "rbd_snap_rollback", rbd_snap_rollback)

// snapRename(from, to)
Napi::Value ImageWrap::SnapRename(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_snap_rename");
  std::string from = ArgString(info, 0, "snapshot");
  std::string to = ArgString(info, 1, "new name");
  auto st = this->st;
  return NewTask(info.Env(), "rbd_snap_rename",
                 [st, from, to](TaskCtx& ctx) -> int {
                   ctx.detail = "snapshot " + from + " -> " + to;
                   return rbd_snap_rename(st->image, from.c_str(), to.c_str());
                 })
      ->Start();
}

Napi::Value ImageWrap::SnapIsProtected(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_snap_is_protected");
  std::string snap = ArgString(info, 0, "snapshot");
  auto st = this->st;
  auto out = std::make_shared<int>(0);
  return NewTask(
             info.Env(), "rbd_snap_is_protected",
             [st, snap, out](TaskCtx& ctx) -> int {
               ctx.detail = "snapshot " + snap;
               return rbd_snap_is_protected(st->image, snap.c_str(), out.get());
             },
             [out](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *out != 0); })
      ->Start();
}

// snapList() -> [{ id, name, size }]
Napi::Value ImageWrap::SnapList(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_snap_list");
  struct Snap {
    uint64_t id, size;
    std::string name;
  };
  auto out = std::make_shared<std::vector<Snap>>();
  auto st = this->st;
  return NewTask(
             info.Env(), "rbd_snap_list",
             [st, out](TaskCtx&) -> int {
               int max = 16;
               for (;;) {
                 std::vector<rbd_snap_info_t> v(static_cast<size_t>(max) + 1);
                 int n = max;
                 int r = rbd_snap_list(st->image, v.data(), &n);
                 if (r == -ERANGE) {
                   max = n > max ? n : max * 2;
                   continue;
                 }
                 if (r < 0) return r;
                 for (int i = 0; i < r; i++)
                   out->push_back({v[i].id, v[i].size, v[i].name ? v[i].name : ""});
                 rbd_snap_list_end(v.data());
                 return 0;
               }
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Array a = Napi::Array::New(env, out->size());
               for (size_t i = 0; i < out->size(); i++) {
                 Napi::Object o = Napi::Object::New(env);
                 o.Set("id", static_cast<double>((*out)[i].id));
                 o.Set("name", (*out)[i].name);
                 o.Set("size", static_cast<double>((*out)[i].size));
                 a.Set(static_cast<uint32_t>(i), o);
               }
               return a;
             })
      ->Start();
}

// flatten(onProgress?: (offset, total) => void)
Napi::Value ImageWrap::Flatten(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_flatten_with_progress");
  Napi::Env env = info.Env();
  Napi::Value cb = info.Length() > 0 ? info[0] : env.Undefined();
  auto st = this->st;
  lc.pending++;
  auto* t = new ProgressTask(
      env, "rbd_flatten_with_progress", st->spec,
      [st](TaskCtx&, librbd_progress_fn_t fn, void* arg) -> int {
        return rbd_flatten_with_progress(st->image, fn, arg);
      },
      cb, [this, env]() { OpDone(env); });
  t->Hold(Value());
  return t->Start();
}

struct LinkedSpec {
  int64_t poolId = -1;
  std::string pool, ns, imageId, image;
  bool trash = false;
};

static LinkedSpec ToLinked(const rbd_linked_image_spec_t& s) {
  LinkedSpec l;
  l.poolId = s.pool_id;
  l.pool = s.pool_name ? s.pool_name : "";
  l.ns = s.pool_namespace ? s.pool_namespace : "";
  l.imageId = s.image_id ? s.image_id : "";
  l.image = s.image_name ? s.image_name : "";
  l.trash = s.trash;
  return l;
}

static Napi::Object LinkedToJs(Napi::Env env, const LinkedSpec& l) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("poolId", static_cast<double>(l.poolId));
  o.Set("pool", l.pool);
  o.Set("namespace", l.ns);
  o.Set("imageId", l.imageId);
  o.Set("image", l.image);
  o.Set("trash", l.trash);
  return o;
}

// listChildren() -> [{ poolId, pool, namespace, imageId, image, trash }]
// (children of the snapshot the handle is opened at; at the head, of all snapshots)
Napi::Value ImageWrap::ListChildren(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_list_children3");
  auto out = std::make_shared<std::vector<LinkedSpec>>();
  auto st = this->st;
  return NewTask(
             info.Env(), "rbd_list_children3",
             [st, out](TaskCtx&) -> int {
               size_t max = 16;
               for (;;) {
                 std::vector<rbd_linked_image_spec_t> v(max);
                 size_t n = max;
                 int r = rbd_list_children3(st->image, v.data(), &n);
                 if (r == -ERANGE) {
                   max = n > max ? n : max * 2;
                   continue;
                 }
                 if (r < 0) return r;
                 for (size_t i = 0; i < n; i++) out->push_back(ToLinked(v[i]));
                 rbd_linked_image_spec_list_cleanup(v.data(), n);
                 return 0;
               }
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Array a = Napi::Array::New(env, out->size());
               for (size_t i = 0; i < out->size(); i++)
                 a.Set(static_cast<uint32_t>(i), LinkedToJs(env, (*out)[i]));
               return a;
             })
      ->Start();
}

// parentInfo() -> { ...LinkedSpec, snapshotId, snapshot } | null
Napi::Value ImageWrap::ParentInfo(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_get_parent");
  struct Out {
    bool has = false;
    LinkedSpec spec;
    uint64_t snapId = 0;
    std::string snap;
  };
  auto out = std::make_shared<Out>();
  auto st = this->st;
  return NewTask(
             info.Env(), "rbd_get_parent",
             [st, out](TaskCtx&) -> int {
               rbd_linked_image_spec_t pi;
               rbd_snap_spec_t ps;
               memset(&pi, 0, sizeof pi);
               memset(&ps, 0, sizeof ps);
               int r = rbd_get_parent(st->image, &pi, &ps);
               if (r == -ENOENT) return 0;
               if (r < 0) return r;
               out->has = true;
               out->spec = ToLinked(pi);
               out->snapId = ps.id;
               out->snap = ps.name ? ps.name : "";
               rbd_linked_image_spec_cleanup(&pi);
               rbd_snap_spec_cleanup(&ps);
               return 0;
             },
             [out](Napi::Env env) -> Napi::Value {
               if (!out->has) return env.Null();
               Napi::Object o = LinkedToJs(env, out->spec);
               o.Set("snapshotId", static_cast<double>(out->snapId));
               o.Set("snapshot", out->snap);
               return o;
             })
      ->Start();
}

// diffIterate(fromSnap|null, offset, length, includeParent, wholeObject, maxExtents)
//   -> { extents: [{ offset, length, exists }], more: boolean, nextOffset }
// Stops after maxExtents extents; the caller continues from nextOffset.
Napi::Value ImageWrap::DiffIterate(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_diff_iterate2");
  std::string from;
  bool hasFrom = ArgOptString(info, 0, "fromSnap", &from);
  uint64_t off = ArgU64(info, 1, "offset");
  uint64_t len = ArgU64(info, 2, "length");
  bool includeParent = info.Length() > 3 && info[3].ToBoolean().Value();
  bool wholeObject = info.Length() > 4 && info[4].ToBoolean().Value();
  uint64_t maxExtents = 65536;
  ArgOptU64(info, 5, "maxExtents", &maxExtents);
  if (maxExtents == 0) maxExtents = 1;
  struct Ext {
    uint64_t off, len;
    bool exists;
  };
  struct Out {
    std::vector<Ext> extents;
    uint64_t max = 0;
    bool more = false;
  };
  auto out = std::make_shared<Out>();
  out->max = maxExtents;
  auto st = this->st;
  uint64_t end = off + len;
  return NewTask(
             info.Env(), "rbd_diff_iterate2",
             [=](TaskCtx& ctx) -> int {
               if (hasFrom) ctx.detail = "from snapshot " + from;
               auto cb = [](uint64_t o, size_t l, int exists, void* arg) -> int {
                 Out* out = static_cast<Out*>(arg);
                 if (out->extents.size() >= out->max) {
                   out->more = true;
                   return -ECANCELED;
                 }
                 out->extents.push_back({o, l, exists != 0});
                 return 0;
               };
               int r = rbd_diff_iterate2(st->image, hasFrom ? from.c_str() : nullptr, off, len,
                                         includeParent ? 1 : 0, wholeObject ? 1 : 0, cb,
                                         out.get());
               if (r == -ECANCELED && out->more) r = 0;
               return r;
             },
             [out, end](Napi::Env env) -> Napi::Value {
               Napi::Object res = Napi::Object::New(env);
               Napi::Array a = Napi::Array::New(env, out->extents.size());
               for (size_t i = 0; i < out->extents.size(); i++) {
                 Napi::Object e = Napi::Object::New(env);
                 e.Set("offset", static_cast<double>(out->extents[i].off));
                 e.Set("length", static_cast<double>(out->extents[i].len));
                 e.Set("exists", out->extents[i].exists);
                 a.Set(static_cast<uint32_t>(i), e);
               }
               res.Set("extents", a);
               res.Set("more", out->more);
               uint64_t next = end;
               if (out->more && !out->extents.empty())
                 next = out->extents.back().off + out->extents.back().len;
               res.Set("nextOffset", static_cast<double>(next));
               return res;
             })
      ->Start();
}

// read(offset, length, target?: Buffer) -> Buffer | bytes read (into target)
Napi::Value ImageWrap::Read(const Napi::CallbackInfo& info) { return SubmitAio(info, AioOp::READ); }
// write(offset, data: Buffer)
Napi::Value ImageWrap::Write(const Napi::CallbackInfo& info) { return SubmitAio(info, AioOp::WRITE); }
// discard(offset, length)
Napi::Value ImageWrap::Discard(const Napi::CallbackInfo& info) {
  return SubmitAio(info, AioOp::DISCARD);
}
// writeZeroes(offset, length)
Napi::Value ImageWrap::WriteZeroes(const Napi::CallbackInfo& info) {
  return SubmitAio(info, AioOp::WRITE_ZEROES);
}
// flush()
Napi::Value ImageWrap::Flush(const Napi::CallbackInfo& info) { return SubmitAio(info, AioOp::FLUSH); }

Napi::Value ImageWrap::SubmitAio(const Napi::CallbackInfo& info, int kind) {
  static const char* names[] = {"rbd_aio_read", "rbd_aio_write", "rbd_aio_discard",
                                "rbd_aio_flush", "rbd_aio_write_zeroes"};
  Napi::Env env = info.Env();
  const char* opName = names[kind];
  IMAGE_GUARD(opName);
  uint64_t off = 0, len = 0;
  Napi::Object buf;
  char* target = nullptr;
  bool hasTarget = false;
  if (kind == AioOp::READ || kind == AioOp::DISCARD || kind == AioOp::WRITE_ZEROES) {
    off = ArgU64(info, 0, "offset");
    len = ArgU64(info, 1, "length");
    if (kind == AioOp::READ && info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) {
      if (!info[2].IsBuffer()) throw Napi::TypeError::New(env, "target must be a Buffer");
      auto b = info[2].As<Napi::Buffer<char>>();
      if (len > b.Length()) throw Napi::RangeError::New(env, "length exceeds the target buffer");
      buf = b;
      target = b.Data();
      hasTarget = true;
    }
  } else if (kind == AioOp::WRITE) {
    off = ArgU64(info, 0, "offset");
    if (info.Length() < 2 || !info[1].IsBuffer())
      throw Napi::TypeError::New(env, "data must be a Buffer or Uint8Array");
    auto b = info[1].As<Napi::Buffer<char>>();
    buf = b;
    target = b.Data();
    len = b.Length();
  }

  auto* op = new AioOp(env);
  op->kind = kind;
  op->opName = opName;
  op->owner = this;
  op->off = off;
  op->len = static_cast<size_t>(len);
  op->tsfn = addon->aioTsfn;
  if (kind == AioOp::READ && !hasTarget) {
    op->data = static_cast<char*>(malloc(len > 0 ? len : 1));
    if (op->data == nullptr) {
      delete op;
      return Rejected(env, ENOMEM, opName, st->spec);
    }
    op->ownsData = true;
  } else {
    op->data = target;
  }
  rbd_completion_t c = nullptr;
  int r = rbd_aio_create_completion(op, OnAioComplete, &c);
  if (r < 0) {
    if (op->ownsData) free(op->data);
    delete op;
    return Rejected(env, -r, "rbd_aio_create_completion", st->spec);
  }
  op->ownerRef = Napi::Persistent(Value());
  if (!buf.IsEmpty()) op->bufRef = Napi::Persistent(buf);
  Napi::Promise promise = op->deferred.Promise();
  lc.pending++;
  addon->AioStarted(env);
  switch (kind) {
    case AioOp::READ:
      r = rbd_aio_read(st->image, off, op->len, op->data, c);
      break;
    case AioOp::WRITE:
      r = rbd_aio_write(st->image, off, op->len, op->data, c);
      break;
    case AioOp::DISCARD:
      r = rbd_aio_discard(st->image, off, len, c);
      break;
    case AioOp::WRITE_ZEROES:
      r = rbd_aio_write_zeroes(st->image, off, op->len, c, 0, 0);
      break;
    default:
      r = rbd_aio_flush(st->image, c);
      break;
  }
  if (r < 0) {
    // Not submitted: no callback will come.
    rbd_aio_release(c);
    op->ret = r;
    op->Finish(env);
  }
  return promise;
}

Napi::Value ImageWrap::LockOwners(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_lock_get_owners");
  struct Out {
    rbd_lock_mode_t mode = RBD_LOCK_MODE_EXCLUSIVE;
    std::vector<std::string> owners;
  };
  auto out = std::make_shared<Out>();
  auto st = this->st;
  return NewTask(
             info.Env(), "rbd_lock_get_owners",
             [st, out](TaskCtx&) -> int {
               size_t max = 8;
               for (;;) {
                 std::vector<char*> v(max, nullptr);
                 size_t n = max;
                 int r = rbd_lock_get_owners(st->image, &out->mode, v.data(), &n);
                 if (r == -ERANGE) {
                   max = n > max ? n : max * 2;
                   continue;
                 }
                 if (r == -ENOENT) return 0;  // no owner
                 if (r < 0) return r;
                 for (size_t i = 0; i < n; i++) out->owners.emplace_back(v[i] ? v[i] : "");
                 rbd_lock_get_owners_cleanup(v.data(), n);
                 return 0;
               }
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Object o = Napi::Object::New(env);
               o.Set("mode", out->mode == RBD_LOCK_MODE_SHARED ? "shared" : "exclusive");
               Napi::Array a = Napi::Array::New(env, out->owners.size());
               for (size_t i = 0; i < out->owners.size(); i++)
                 a.Set(static_cast<uint32_t>(i), out->owners[i]);
               o.Set("owners", a);
               return o;
             })
      ->Start();
}

static bool ParseMode(const Napi::CallbackInfo& info, size_t i, rbd_lock_mode_t* mode) {
  std::string m = ArgString(info, i, "mode");
  if (m == "exclusive") {
    *mode = RBD_LOCK_MODE_EXCLUSIVE;
    return true;
  }
  if (m == "shared") {
    *mode = RBD_LOCK_MODE_SHARED;
    return true;
  }
  throw Napi::TypeError::New(info.Env(), "mode must be 'exclusive' or 'shared'");
}

Napi::Value ImageWrap::LockBreak(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_lock_break");
  rbd_lock_mode_t mode;
  ParseMode(info, 0, &mode);
  std::string owner = ArgString(info, 1, "owner");
  auto st = this->st;
  return NewTask(info.Env(), "rbd_lock_break",
                 [st, mode, owner](TaskCtx& ctx) -> int {
                   ctx.detail = "owner " + owner;
                   return rbd_lock_break(st->image, mode, owner.c_str());
                 })
      ->Start();
}

Napi::Value ImageWrap::LockAcquire(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_lock_acquire");
  rbd_lock_mode_t mode;
  ParseMode(info, 0, &mode);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_lock_acquire",
                 [st, mode](TaskCtx&) -> int { return rbd_lock_acquire(st->image, mode); })
      ->Start();
}

Napi::Value ImageWrap::LockRelease(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_lock_release");
  auto st = this->st;
  return NewTask(info.Env(), "rbd_lock_release",
                 [st](TaskCtx&) -> int { return rbd_lock_release(st->image); })
      ->Start();
}

Napi::Value ImageWrap::IsExclusiveLockOwner(const Napi::CallbackInfo& info) {
  IMAGE_GUARD("rbd_is_exclusive_lock_owner");
  auto out = std::make_shared<int>(0);
  auto st = this->st;
  return NewTask(
             info.Env(), "rbd_is_exclusive_lock_owner",
             [st, out](TaskCtx&) -> int { return rbd_is_exclusive_lock_owner(st->image, out.get()); },
             [out](Napi::Env env) -> Napi::Value { return Napi::Boolean::New(env, *out != 0); })
      ->Start();
}

// close(): waits for every operation in flight, then rbd_close. Later calls
// on the handle are refused with EBADF; repeated close() calls share the result.
Napi::Value ImageWrap::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto d = Napi::Promise::Deferred::New(env);
  if (lc.state == Lifecycle::CLOSED) {
    d.Resolve(env.Undefined());
    return d.Promise();
  }
  lc.waiters.push_back(d);
  if (lc.state == Lifecycle::OPEN) {
    lc.state = Lifecycle::CLOSING;
    if (lc.pending == 0) StartClose(env);
  }
  return d.Promise();
}

void ImageWrap::StartClose(Napi::Env env) {
  auto st = this->st;
  auto rc = std::make_shared<int>(0);
  auto* t = new Task(
      env, "rbd_close", st->spec,
      [st, rc](TaskCtx&) -> int {
        *rc = st->Close();
        return 0;
      },
      nullptr,
      [this, rc, st]() {
        lc.state = Lifecycle::CLOSED;
        Napi::Env env = Env();
        for (auto& w : lc.waiters) {
          if (*rc < 0)
            w.Reject(MakeError(env, -*rc, "rbd_close", st->spec).Value());
          else
            w.Resolve(env.Undefined());
        }
        lc.waiters.clear();
      });
  t->Hold(Value());
  t->Start();
}

}  // namespace pumice
