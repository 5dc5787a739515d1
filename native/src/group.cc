// RBD groups (librbd rbd_group_*): a group of images in the ioctx's pool and
// its group snapshots, which snapshot every member at one moment. Plus the
// image calls that find and read a member's snapshot in the group namespace
// (such snapshots have no user name, only an id).
#include <cerrno>

#include "common.h"

namespace pumice {

#define GROUP_IOCTX_GUARD(op, subject) \
  if (!lc.Usable()) return Rejected(info.Env(), EBADF, op, subject, "ioctx is closed")
#define GROUP_IMAGE_GUARD(op) \
  if (!lc.Usable()) return Rejected(info.Env(), EBADF, op, st->spec, "image is closed")

// groupCreate(name)
Napi::Value IoctxWrap::GroupCreate(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "group");
  std::string subject = st->pool + "/" + name;
  GROUP_IOCTX_GUARD("rbd_group_create", subject);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_group_create", subject,
                 [st, name](TaskCtx&) -> int { return rbd_group_create(st->io, name.c_str()); })
      ->Start();
}

// groupRemove(name): removes the group and its group snapshots; the images stay.
Napi::Value IoctxWrap::GroupRemove(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "group");
  std::string subject = st->pool + "/" + name;
  GROUP_IOCTX_GUARD("rbd_group_remove", subject);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_group_remove", subject,
                 [st, name](TaskCtx&) -> int { return rbd_group_remove(st->io, name.c_str()); })
      ->Start();
}

// groupList() -> [name]
Napi::Value IoctxWrap::GroupList(const Napi::CallbackInfo& info) {
  GROUP_IOCTX_GUARD("rbd_group_list", st->pool);
  auto st = this->st;
  auto out = std::make_shared<std::vector<std::string>>();
  return NewTask(
             info.Env(), "rbd_group_list", st->pool,
             [st, out](TaskCtx&) -> int {
               size_t size = 1024;
               for (;;) {
                 std::vector<char> buf(size);
                 size_t n = size;
                 int r = rbd_group_list(st->io, buf.data(), &n);
                 if (r == -ERANGE) {
                   size = n > size ? n : size * 2;
                   continue;
                 }
                 if (r < 0) return r;
                 // r is the bytes used: names separated by NULs
                 for (size_t i = 0; i < static_cast<size_t>(r);) {
                   std::string name(buf.data() + i);
                   if (!name.empty()) out->push_back(name);
                   i += name.size() + 1;
                 }
                 return 0;
               }
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Array a = Napi::Array::New(env, out->size());
               for (size_t i = 0; i < out->size(); i++) a.Set(static_cast<uint32_t>(i), (*out)[i]);
               return a;
             })
      ->Start();
}

// groupImageAdd(group, image) / groupImageRemove(group, image): images of this ioctx's pool.
Napi::Value IoctxWrap::GroupImageAdd(const Napi::CallbackInfo& info) {
  std::string group = ArgString(info, 0, "group");
  std::string image = ArgString(info, 1, "image");
  std::string subject = st->pool + "/" + group;
  GROUP_IOCTX_GUARD("rbd_group_image_add", subject);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_group_image_add", subject,
                 [st, group, image](TaskCtx& ctx) -> int {
                   ctx.detail = "image " + image;
                   return rbd_group_image_add(st->io, group.c_str(), st->io, image.c_str());
                 })
      ->Start();
}

Napi::Value IoctxWrap::GroupImageRemove(const Napi::CallbackInfo& info) {
  std::string group = ArgString(info, 0, "group");
  std::string image = ArgString(info, 1, "image");
  std::string subject = st->pool + "/" + group;
  GROUP_IOCTX_GUARD("rbd_group_image_remove", subject);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_group_image_remove", subject,
                 [st, group, image](TaskCtx& ctx) -> int {
                   ctx.detail = "image " + image;
                   return rbd_group_image_remove(st->io, group.c_str(), st->io, image.c_str());
                 })
      ->Start();
}

// groupImageList(group) -> [{ name, poolId, complete }]
Napi::Value IoctxWrap::GroupImageList(const Napi::CallbackInfo& info) {
  std::string group = ArgString(info, 0, "group");
  std::string subject = st->pool + "/" + group;
  GROUP_IOCTX_GUARD("rbd_group_image_list", subject);
  struct Entry {
    std::string name;
    int64_t pool;
    bool complete;
  };
  auto st = this->st;
  auto out = std::make_shared<std::vector<Entry>>();
  return NewTask(
             info.Env(), "rbd_group_image_list", subject,
             [st, group, out](TaskCtx&) -> int {
               size_t max = 16;
               for (;;) {
                 std::vector<rbd_group_image_info_t> v(max);
                 size_t n = max;
                 int r = rbd_group_image_list(st->io, group.c_str(), v.data(), sizeof(rbd_group_image_info_t), &n);
                 if (r == -ERANGE) {
                   max = n > max ? n : max * 2;
                   continue;
                 }
                 if (r < 0) return r;
                 for (size_t i = 0; i < n; i++)
                   out->push_back({v[i].name ? v[i].name : "", v[i].pool, v[i].state == RBD_GROUP_IMAGE_STATE_ATTACHED});
                 rbd_group_image_list_cleanup(v.data(), sizeof(rbd_group_image_info_t), n);
                 return 0;
               }
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Array a = Napi::Array::New(env, out->size());
               for (size_t i = 0; i < out->size(); i++) {
                 Napi::Object o = Napi::Object::New(env);
                 o.Set("name", (*out)[i].name);
                 o.Set("poolId", static_cast<double>((*out)[i].pool));
                 o.Set("complete", (*out)[i].complete);
                 a.Set(static_cast<uint32_t>(i), o);
               }
               return a;
             })
      ->Start();
}

// groupSnapCreate(group, snap, flags): one snapshot of every member at one moment.
Napi::Value IoctxWrap::GroupSnapCreate(const Napi::CallbackInfo& info) {
  std::string group = ArgString(info, 0, "group");
  std::string snap = ArgString(info, 1, "snapshot");
  uint64_t flags = ArgU64(info, 2, "flags");
  std::string subject = st->pool + "/" + group + "@" + snap;
  GROUP_IOCTX_GUARD("rbd_group_snap_create2", subject);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_group_snap_create2", subject,
                 [st, group, snap, flags](TaskCtx&) -> int {
                   return rbd_group_snap_create2(st->io, group.c_str(), snap.c_str(), static_cast<uint32_t>(flags));
                 })
      ->Start();
}

// groupSnapRemove(group, snap): removes the group snapshot and every member's snapshot of it.
Napi::Value IoctxWrap::GroupSnapRemove(const Napi::CallbackInfo& info) {
  std::string group = ArgString(info, 0, "group");
  std::string snap = ArgString(info, 1, "snapshot");
  std::string subject = st->pool + "/" + group + "@" + snap;
  GROUP_IOCTX_GUARD("rbd_group_snap_remove", subject);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_group_snap_remove", subject,
                 [st, group, snap](TaskCtx&) -> int { return rbd_group_snap_remove(st->io, group.c_str(), snap.c_str()); })
      ->Start();
}

// groupSnapList(group) -> [{ name, complete }]
Napi::Value IoctxWrap::GroupSnapList(const Napi::CallbackInfo& info) {
  std::string group = ArgString(info, 0, "group");
  std::string subject = st->pool + "/" + group;
  GROUP_IOCTX_GUARD("rbd_group_snap_list", subject);
  auto st = this->st;
  auto out = std::make_shared<std::vector<std::pair<std::string, bool>>>();
  return NewTask(
             info.Env(), "rbd_group_snap_list", subject,
             [st, group, out](TaskCtx&) -> int {
               size_t max = 16;
               for (;;) {
                 std::vector<rbd_group_snap_info_t> v(max);
                 size_t n = max;
                 int r = rbd_group_snap_list(st->io, group.c_str(), v.data(), sizeof(rbd_group_snap_info_t), &n);
                 if (r == -ERANGE) {
                   max = n > max ? n : max * 2;
                   continue;
                 }
                 if (r < 0) return r;
                 for (size_t i = 0; i < n; i++)
                   out->emplace_back(v[i].name ? v[i].name : "", v[i].state == RBD_GROUP_SNAP_STATE_COMPLETE);
                 rbd_group_snap_list_cleanup(v.data(), sizeof(rbd_group_snap_info_t), n);
                 return 0;
               }
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Array a = Napi::Array::New(env, out->size());
               for (size_t i = 0; i < out->size(); i++) {
                 Napi::Object o = Napi::Object::New(env);
                 o.Set("name", (*out)[i].first);
                 o.Set("complete", (*out)[i].second);
                 a.Set(static_cast<uint32_t>(i), o);
               }
               return a;
             })
      ->Start();
}

// getGroup() -> { poolId, name } | null: the group the image belongs to.
Napi::Value ImageWrap::GetGroup(const Napi::CallbackInfo& info) {
  GROUP_IMAGE_GUARD("rbd_get_group");
  struct Out {
    int64_t pool = -1;
    std::string name;
  };
  auto out = std::make_shared<Out>();
  auto st = this->st;
  return NewTask(
             info.Env(), "rbd_get_group",
             [st, out](TaskCtx&) -> int {
               rbd_group_info_t g{};
               int r = rbd_get_group(st->image, &g, sizeof g);
               if (r < 0) return r;
               out->pool = g.pool;
               out->name = g.name ? g.name : "";
               rbd_group_info_cleanup(&g, sizeof g);
               return 0;
             },
             [out](Napi::Env env) -> Napi::Value {
               if (out->pool < 0 || out->name.empty()) return env.Null();
               Napi::Object o = Napi::Object::New(env);
               o.Set("poolId", static_cast<double>(out->pool));
               o.Set("name", out->name);
               return o;
             })
      ->Start();
}

// snapGroupNamespace(snapId) -> { groupPoolId, group, groupSnap } | null when the
// snapshot is not of a group (user, trash or mirror namespace).
Napi::Value ImageWrap::SnapGroupNamespace(const Napi::CallbackInfo& info) {
  GROUP_IMAGE_GUARD("rbd_snap_get_group_namespace");
  uint64_t snapId = ArgU64(info, 0, "snapId");
  struct Out {
    bool group = false;
    int64_t pool = -1;
    std::string name, snap;
  };
  auto out = std::make_shared<Out>();
  auto st = this->st;
  return NewTask(
             info.Env(), "rbd_snap_get_group_namespace",
             [st, out, snapId](TaskCtx& ctx) -> int {
               rbd_snap_namespace_type_t type;
               ctx.operation = "rbd_snap_get_namespace_type";
               int r = rbd_snap_get_namespace_type(st->image, snapId, &type);
               if (r < 0) return r;
               if (type != RBD_SNAP_NAMESPACE_TYPE_GROUP) return 0;
               ctx.operation = "rbd_snap_get_group_namespace";
               rbd_snap_group_namespace_t ns{};
               r = rbd_snap_get_group_namespace(st->image, snapId, &ns, sizeof ns);
               if (r < 0) return r;
               out->group = true;
               out->pool = ns.group_pool;
               out->name = ns.group_name ? ns.group_name : "";
               out->snap = ns.group_snap_name ? ns.group_snap_name : "";
               rbd_snap_group_namespace_cleanup(&ns, sizeof ns);
               return 0;
             },
             [out](Napi::Env env) -> Napi::Value {
               if (!out->group) return env.Null();
               Napi::Object o = Napi::Object::New(env);
               o.Set("groupPoolId", static_cast<double>(out->pool));
               o.Set("group", out->name);
               o.Set("groupSnap", out->snap);
               return o;
             })
      ->Start();
}

// snapSetById(snapId | null): reads (and diffs) then see the image at that
// snapshot, whatever its namespace; null goes back to the head.
Napi::Value ImageWrap::SnapSetById(const Napi::CallbackInfo& info) {
  GROUP_IMAGE_GUARD("rbd_snap_set_by_id");
  uint64_t snapId = 0;
  bool has = ArgOptU64(info, 0, "snapId", &snapId);
  auto st = this->st;
  return NewTask(info.Env(), "rbd_snap_set_by_id",
                 [st, has, snapId](TaskCtx&) -> int {
                   // CEPH_NOSNAP (-2) is the head
                   return rbd_snap_set_by_id(st->image, has ? snapId : static_cast<uint64_t>(-2));
                 })
      ->Start();
}

}  // namespace pumice
