// Pool I/O context: image create/remove/list/open/clone, trash, close.
#include <cerrno>

#include "common.h"

namespace pumice {

Napi::Function IoctxWrap::Define(Napi::Env env) {
  return DefineClass(env, "Ioctx",
                     {
                         InstanceMethod<&IoctxWrap::PoolName>("poolName"),
                         InstanceMethod<&IoctxWrap::PoolId>("poolId"),
                         InstanceMethod<&IoctxWrap::CreateImage>("createImage"),
                         InstanceMethod<&IoctxWrap::RemoveImage>("removeImage"),
                         InstanceMethod<&IoctxWrap::RenameImage>("renameImage"),
                         InstanceMethod<&IoctxWrap::ListImages>("listImages"),
                         InstanceMethod<&IoctxWrap::OpenImage>("openImage"),
                         InstanceMethod<&IoctxWrap::Clone>("clone"),
                         InstanceMethod<&IoctxWrap::TrashMove>("trashMove"),
                         InstanceMethod<&IoctxWrap::TrashList>("trashList"),
                         InstanceMethod<&IoctxWrap::TrashRemove>("trashRemove"),
                         InstanceMethod<&IoctxWrap::TrashRestore>("trashRestore"),
                         InstanceMethod<&IoctxWrap::GroupCreate>("groupCreate"),
                         InstanceMethod<&IoctxWrap::GroupRemove>("groupRemove"),
                         InstanceMethod<&IoctxWrap::GroupList>("groupList"),
                         InstanceMethod<&IoctxWrap::GroupImageAdd>("groupImageAdd"),
                         InstanceMethod<&IoctxWrap::GroupImageRemove>("groupImageRemove"),
                         InstanceMethod<&IoctxWrap::GroupImageList>("groupImageList"),
                         InstanceMethod<&IoctxWrap::GroupSnapCreate>("groupSnapCreate"),
                         InstanceMethod<&IoctxWrap::GroupSnapRemove>("groupSnapRemove"),
                         InstanceMethod<&IoctxWrap::GroupSnapList>("groupSnapList"),
                         InstanceMethod<&IoctxWrap::ReadObjects>("readObjects"),
                         InstanceMethod<&IoctxWrap::WriteObjects>("writeObjects"),
                         InstanceMethod<&IoctxWrap::CopyObjects>("copyObjects"),
                         InstanceMethod<&IoctxWrap::Close>("close"),
                     });
}

Napi::Object NewIoctxObject(Napi::Env env, IoctxPtr st) {
  AddonData* data = env.GetInstanceData<AddonData>();
  auto* p = new IoctxPtr(std::move(st));
  return data->ioctxCtor.New({Napi::External<IoctxPtr>::New(env, p)});
}

IoctxWrap::IoctxWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<IoctxWrap>(info) {
  if (info.Length() < 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "use Cluster.openIoctx() to create an Ioctx");
  IoctxPtr* p = info[0].As<Napi::External<IoctxPtr>>().Data();
  st = std::move(*p);
  delete p;
}

IoctxWrap::~IoctxWrap() {
  // rados_ioctx_destroy is cheap, but dropping the last cluster reference
  // would run rados_shutdown: do it off the JS thread.
  DropOffThread(st);
}

void IoctxWrap::OpDone(Napi::Env env) {
  lc.pending--;
  if (lc.state == Lifecycle::CLOSING && lc.pending == 0) StartClose(env);
}

Task* IoctxWrap::NewTask(Napi::Env env, const std::string& op, const std::string& subject,
                         Task::Run run, Task::Build build) {
  lc.pending++;
  Napi::Env e = env;
  auto* t = new Task(env, op, subject, std::move(run), std::move(build),
                     [this, e]() { OpDone(e); });
  t->Hold(Value());
  return t;
}

#define IOCTX_GUARD(op, subject)                                         \
  if (!lc.Usable())                                                      \
  return Rejected(info.Env(), EBADF, op, subject, "ioctx is closed")

Napi::Value IoctxWrap::PoolName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), st->pool);
}

Napi::Value IoctxWrap::PoolId(const Napi::CallbackInfo& info) {
  if (!lc.Usable()) throw MakeError(info.Env(), EBADF, "rados_ioctx_get_id", st->pool, "ioctx is closed");
  return Napi::Number::New(info.Env(), static_cast<double>(rados_ioctx_get_id(st->io)));
}

// createImage(name, size, features|null, order|null, stripeUnit|null, stripeCount|null, dataPool|null)
Napi::Value IoctxWrap::CreateImage(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "name");
  std::string subject = st->pool + "/" + name;
  IOCTX_GUARD("rbd_create4", subject);
  uint64_t size = ArgU64(info, 1, "size");
  uint64_t features = 0, order = 0, su = 0, sc = 0;
  bool hasFeatures = ArgOptU64(info, 2, "features", &features);
  bool hasOrder = ArgOptU64(info, 3, "order", &order);
  bool hasSu = ArgOptU64(info, 4, "stripeUnit", &su);
  bool hasSc = ArgOptU64(info, 5, "stripeCount", &sc);
  std::string dataPool;
  bool hasDataPool = ArgOptString(info, 6, "dataPool", &dataPool);
  if (hasOrder && (order < 12 || order > 26))
    return Rejected(info.Env(), EINVAL, "rbd_create4", subject, "order must be 12..26");
  auto st = this->st;
  return NewTask(info.Env(), "rbd_create4", subject,
                 [=](TaskCtx& ctx) -> int {
                   rbd_image_options_t opts;
                   rbd_image_options_create(&opts);
                   int r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FORMAT, 2);
                   if (r >= 0 && hasFeatures)
                     r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FEATURES, features);
                   if (r >= 0 && hasOrder)
                     r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_ORDER, order);
                   if (r >= 0 && hasSu)
                     r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_STRIPE_UNIT, su);
                   if (r >= 0 && hasSc)
                     r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_STRIPE_COUNT, sc);
                   if (r >= 0 && hasDataPool)
                     r = rbd_image_options_set_string(opts, RBD_IMAGE_OPTION_DATA_POOL,
                                                      dataPool.c_str());
                   if (r < 0) ctx.operation = "rbd_image_options_set";
                   if (r >= 0) r = rbd_create4(st->io, name.c_str(), size, opts);
                   rbd_image_options_destroy(opts);
                   return r;
                 })
      ->Start();
}

Napi::Value IoctxWrap::RemoveImage(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "name");
  std::string subject = st->pool + "/" + name;
  IOCTX_GUARD("rbd_remove", subject);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_remove", subject,
                 [st, name](TaskCtx&) -> int { return rbd_remove(st->io, name.c_str()); })
      ->Start();
}

Napi::Value IoctxWrap::RenameImage(const Napi::CallbackInfo& info) {
  std::string from = ArgString(info, 0, "name");
  std::string to = ArgString(info, 1, "new name");
  std::string subject = st->pool + "/" + from;
  IOCTX_GUARD("rbd_rename", subject);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_rename", subject,
                 [st, from, to](TaskCtx& ctx) -> int {
                   ctx.detail = "to " + to;
                   return rbd_rename(st->io, from.c_str(), to.c_str());
                 })
      ->Start();
}

// listImages() -> [{ id, name }]
Napi::Value IoctxWrap::ListImages(const Napi::CallbackInfo& info) {
  IOCTX_GUARD("rbd_list2", st->pool);
  auto st = this->st;
  auto out = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  return NewTask(
             info.Env(), "rbd_list2", st->pool,
             [st, out](TaskCtx&) -> int {
               size_t max = 64;
               for (;;) {
                 std::vector<rbd_image_spec_t> specs(max);
                 size_t n = max;
                 int r = rbd_list2(st->io, specs.data(), &n);
                 if (r == -ERANGE) {
                   max = n > max ? n : max * 2;
                   continue;
                 }
                 if (r < 0) return r;
                 for (size_t i = 0; i < n; i++)
                   out->emplace_back(specs[i].id ? specs[i].id : "", specs[i].name ? specs[i].name : "");
                 rbd_image_spec_list_cleanup(specs.data(), n);
                 return 0;
               }
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Array a = Napi::Array::New(env, out->size());
               for (size_t i = 0; i < out->size(); i++) {
                 Napi::Object o = Napi::Object::New(env);
                 o.Set("id", (*out)[i].first);
                 o.Set("name", (*out)[i].second);
                 a.Set(static_cast<uint32_t>(i), o);
               }
               return a;
             })
      ->Start();
}

// openImage(name, snap|null, readOnly: boolean)
Napi::Value IoctxWrap::OpenImage(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "name");
  std::string snap;
  bool hasSnap = ArgOptString(info, 1, "snapshot", &snap);
  bool readOnly = info.Length() > 2 && info[2].ToBoolean().Value();
  std::string subject = st->pool + "/" + name + (hasSnap ? "@" + snap : "");
  const char* op = readOnly ? "rbd_open_read_only" : "rbd_open";
  IOCTX_GUARD(op, subject);
  auto st = this->st;
  auto out = std::make_shared<ImagePtr>();
  return NewTask(
             info.Env(), op, subject,
             [=](TaskCtx&) -> int {
               rbd_image_t img = nullptr;
               const char* s = hasSnap ? snap.c_str() : nullptr;
               int r = readOnly ? rbd_open_read_only(st->io, name.c_str(), &img, s)
                                : rbd_open(st->io, name.c_str(), &img, s);
               if (r < 0) return r;
               auto is = std::make_shared<ImageState>();
               is->cluster = st->cluster;
               is->image = img;
               is->spec = subject;
               st->cluster->children++;
               *out = std::move(is);
               return 0;
             },
             [out](Napi::Env env) -> Napi::Value { return NewImageObject(env, std::move(*out)); })
      ->Start();
}

// clone(parentIoctx, parentName, parentSnap, childName, features|null, order|null, cloneFormat|null)
// Called on the child's ioctx.
Napi::Value IoctxWrap::Clone(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* data = env.GetInstanceData<AddonData>();
  if (info.Length() < 1 || !info[0].IsObject() ||
      !info[0].As<Napi::Object>().InstanceOf(data->ioctxCtor.Value()))
    throw Napi::TypeError::New(env, "parent ioctx must be an Ioctx");
  Napi::Object parentObj = info[0].As<Napi::Object>();
  IoctxWrap* parent = IoctxWrap::Unwrap(parentObj);
  std::string pName = ArgString(info, 1, "parentImage");
  std::string pSnap = ArgString(info, 2, "parentSnap");
  std::string cName = ArgString(info, 3, "childName");
  uint64_t features = 0, order = 0, format = 0;
  bool hasFeatures = ArgOptU64(info, 4, "features", &features);
  bool hasOrder = ArgOptU64(info, 5, "order", &order);
  bool hasFormat = ArgOptU64(info, 6, "cloneFormat", &format);
  std::string subject = st->pool + "/" + cName;
  std::string parentSpec = parent->st->pool + "/" + pName + "@" + pSnap;
  IOCTX_GUARD("rbd_clone3", subject);
  if (!parent->lc.Usable()) return Rejected(env, EBADF, "rbd_clone3", subject, "parent ioctx is closed");
  auto st = this->st;
  auto pst = parent->st;
  lc.pending++;
  parent->lc.pending++;
  auto* t = new Task(
      env, "rbd_clone3", subject,
      [=](TaskCtx& ctx) -> int {
        rbd_image_options_t opts;
        rbd_image_options_create(&opts);
        int r = 0;
        if (hasFeatures) r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FEATURES, features);
        if (r >= 0 && hasOrder) r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_ORDER, order);
        if (r >= 0 && hasFormat)
          r = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_CLONE_FORMAT, format);
        if (r < 0) ctx.operation = "rbd_image_options_set";
        if (r >= 0)
          r = rbd_clone3(pst->io, pName.c_str(), pSnap.c_str(), st->io, cName.c_str(), opts);
        if (r < 0) ctx.detail = "parent " + parentSpec;
        rbd_image_options_destroy(opts);
        return r;
      },
      nullptr,
      [this, parent, env]() {
        OpDone(env);
        if (parent != this) parent->OpDone(env);
      });
  if (parent == this) lc.pending--;  // same ioctx for parent and child: count once
  t->Hold(Value());
  t->Hold(parentObj);
  return t->Start();
}

// ----------------------------------------------------------------- trash --
// Trash entries are named by image id; their subject in messages is
// "<pool>/trash:<id>".

static std::string TrashSubject(const IoctxPtr& st, const std::string& id) {
  return st->pool + "/trash:" + id;
}

// rbd_trash_image_source_t as `rbd trash ls` names it, in lower case.
static const char* TrashSourceName(rbd_trash_image_source_t s) {
  switch (s) {
    case RBD_TRASH_IMAGE_SOURCE_USER: return "user";
    case RBD_TRASH_IMAGE_SOURCE_MIRRORING: return "mirroring";
    case RBD_TRASH_IMAGE_SOURCE_MIGRATION: return "migration";
    case RBD_TRASH_IMAGE_SOURCE_REMOVING: return "removing";
    case RBD_TRASH_IMAGE_SOURCE_USER_PARENT: return "user_parent";
  }
  return "unknown";
}

// trashMove(name, delaySeconds): the image leaves the directory (listImages)
// at once; its data stays until trashRemove (refused before the delay ends
// unless forced).
Napi::Value IoctxWrap::TrashMove(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "name");
  std::string subject = st->pool + "/" + name;
  IOCTX_GUARD("rbd_trash_move", subject);
  uint64_t delay = ArgU64(info, 1, "delaySeconds");
  auto st = this->st;
  return NewTask(info.Env(), "rbd_trash_move", subject,
                 [st, name, delay](TaskCtx&) -> int {
                   return rbd_trash_move(st->io, name.c_str(), delay);
                 })
      ->Start();
}

struct TrashEntry {
  std::string id, name, source;
  int64_t deletionTime = 0, deferredUntil = 0;
};

// trashList() -> [{ id, name, source, deletionTime, deferredUntil }] (Unix seconds)
Napi::Value IoctxWrap::TrashList(const Napi::CallbackInfo& info) {
  IOCTX_GUARD("rbd_trash_list", st->pool);
  auto st = this->st;
  auto out = std::make_shared<std::vector<TrashEntry>>();
  return NewTask(
             info.Env(), "rbd_trash_list", st->pool,
             [st, out](TaskCtx&) -> int {
               size_t max = 64;
               for (;;) {
                 std::vector<rbd_trash_image_info_t> entries(max);
                 size_t n = max;
                 // returns the number of entries (>= 0), or -ERANGE with n = the number needed
                 int r = rbd_trash_list(st->io, entries.data(), &n);
                 if (r == -ERANGE) {
                   max = n > max ? n : max * 2;
                   continue;
                 }
                 if (r < 0) return r;
                 if (n > max) n = max;
                 for (size_t i = 0; i < n; i++) {
                   const rbd_trash_image_info_t& e = entries[i];
                   out->push_back({e.id ? e.id : "", e.name ? e.name : "", TrashSourceName(e.source),
                                   static_cast<int64_t>(e.deletion_time),
                                   static_cast<int64_t>(e.deferment_end_time)});
                 }
                 rbd_trash_list_cleanup(entries.data(), n);
                 return 0;
               }
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Array a = Napi::Array::New(env, out->size());
               for (size_t i = 0; i < out->size(); i++) {
                 const TrashEntry& e = (*out)[i];
                 Napi::Object o = Napi::Object::New(env);
                 o.Set("id", e.id);
                 o.Set("name", e.name);
                 o.Set("source", e.source);
                 o.Set("deletionTime", Napi::Number::New(env, static_cast<double>(e.deletionTime)));
                 o.Set("deferredUntil", Napi::Number::New(env, static_cast<double>(e.deferredUntil)));
                 a.Set(static_cast<uint32_t>(i), o);
               }
               return a;
             })
      ->Start();
}

// trashRemove(id, force): deletes the image's data and the trash entry.
// Without force, an entry whose delay has not ended is refused (EPERM).
Napi::Value IoctxWrap::TrashRemove(const Napi::CallbackInfo& info) {
  std::string id = ArgString(info, 0, "id");
  std::string subject = TrashSubject(st, id);
  IOCTX_GUARD("rbd_trash_remove", subject);
  bool force = info.Length() > 1 && info[1].ToBoolean().Value();
  auto st = this->st;
  return NewTask(info.Env(), "rbd_trash_remove", subject,
                 [st, id, force](TaskCtx&) -> int { return rbd_trash_remove(st->io, id.c_str(), force); })
      ->Start();
}

// trashRestore(id, newName): back into the directory under newName.
Napi::Value IoctxWrap::TrashRestore(const Napi::CallbackInfo& info) {
  std::string id = ArgString(info, 0, "id");
  std::string to = ArgString(info, 1, "new name");
  std::string subject = TrashSubject(st, id);
  IOCTX_GUARD("rbd_trash_restore", subject);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_trash_restore", subject,
                 [st, id, to](TaskCtx& ctx) -> int {
                   ctx.detail = "to " + to;
                   return rbd_trash_restore(st->io, id.c_str(), to.c_str());
                 })
      ->Start();
}

Napi::Value IoctxWrap::Close(const Napi::CallbackInfo& info) {
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

void IoctxWrap::StartClose(Napi::Env env) {
  auto st = this->st;
  auto* t = new Task(
      env, "rados_ioctx_destroy", st->pool,
      [st](TaskCtx&) -> int {
        st->Destroy();
        return 0;
      },
      nullptr,
      [this]() {
        lc.state = Lifecycle::CLOSED;
        for (auto& w : lc.waiters) w.Resolve(Env().Undefined());
        lc.waiters.clear();
      });
  t->Hold(Value());
  t->Start();
}

}  // namespace pumice
