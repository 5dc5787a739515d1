// Batched object I/O on an RBD image's data objects, through librados: one
// read op (or one write op) per object carrying every extent of that object,
// all objects of a batch in flight at once. Used by the Ceph backup driver,
// whose incrementals are bound by round trips (a 4 KiB change per op), not
// by bandwidth: N changed extents in one object cost one round trip here
// instead of N through librbd.
//
// The caller names the objects (`rbd_data.<id>.%016x`) and is responsible for
// an image layout where that mapping holds (no striping, no data pool), and,
// for writes, for an image whose objects librbd does not track (no object
// map): librados does not update librbd's metadata.
#include <cerrno>
#include <cstring>

#include "common.h"

namespace pumice {

#define OBJECTS_GUARD(op)  \
  if (!lc.Usable()) return Rejected(info.Env(), EBADF, op, st->pool, "ioctx is closed")

namespace {

// Reads the per-object extent lists: objects[i] = [offset, length, ...] (reads)
// or [offset, length, kind, ...] (writes; kind 0 = data, 1 = zeroes).
std::vector<std::vector<uint64_t>> ArgExtentLists(const Napi::CallbackInfo& info, size_t i,
                                                  size_t stride, size_t count) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsArray())
    throw Napi::TypeError::New(env, "extents must be an array of arrays");
  Napi::Array outer = info[i].As<Napi::Array>();
  if (outer.Length() != count)
    throw Napi::RangeError::New(env, "extents must have one entry per object");
  std::vector<std::vector<uint64_t>> out(count);
  for (uint32_t o = 0; o < count; o++) {
    Napi::Value v = outer.Get(o);
    if (!v.IsArray()) throw Napi::TypeError::New(env, "extents must be an array of arrays");
    Napi::Array inner = v.As<Napi::Array>();
    if (inner.Length() % stride != 0 || inner.Length() == 0)
      throw Napi::RangeError::New(env, "each object needs at least one extent of " +
                                           std::to_string(stride) + " numbers");
    for (uint32_t k = 0; k < inner.Length(); k++) {
      Napi::Value n = inner.Get(k);
      if (!n.IsNumber()) throw Napi::TypeError::New(env, "extent values must be numbers");
      double d = n.As<Napi::Number>().DoubleValue();
      if (d < 0 || d != static_cast<double>(static_cast<uint64_t>(d)))
        throw Napi::RangeError::New(env, "extent values must be non-negative integers");
      out[o].push_back(static_cast<uint64_t>(d));
    }
  }
  return out;
}

std::vector<std::string> ArgOids(const Napi::CallbackInfo& info, size_t i, size_t max) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsArray()) throw Napi::TypeError::New(env, "oids must be an array");
  Napi::Array a = info[i].As<Napi::Array>();
  if (a.Length() == 0 || a.Length() > max)
    throw Napi::RangeError::New(env, "between 1 and " + std::to_string(max) + " objects per call");
  std::vector<std::string> out;
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value v = a.Get(k);
    if (!v.IsString()) throw Napi::TypeError::New(env, "oids must be strings");
    out.push_back(v.As<Napi::String>().Utf8Value());
  }
  return out;
}

// A temporary ioctx on the same pool: the read snapshot and the write snapshot
// context are per ioctx, and the shared one serves other calls meanwhile.
int OpenPrivateIoctx(const IoctxPtr& st, rados_ioctx_t* io, TaskCtx& ctx) {
  ctx.operation = "rados_ioctx_create2";
  int r = rados_ioctx_create2(st->cluster->rados, rados_ioctx_get_id(st->io), io);
  return r;
}

}  // namespace

// Objects per call: each is one op in flight; the caller batches beyond this.
static const size_t kObjectsPerCallMax = 1024;

// readObjects(snapId|null, oids, extents[[off, len, ...]], target: Buffer)
//   -> number[] (per object: 0, or -errno such as -ENOENT for an absent object)
// The extents' bytes land in `target` one after the other, in order; bytes an
// object does not hold (short object) read as zeroes. An absent object is not
// an error of the call: its entry is -ENOENT and its bytes are left untouched.
Napi::Value IoctxWrap::ReadObjects(const Napi::CallbackInfo& info) {
  OBJECTS_GUARD("rados_read_op_operate");
  Napi::Env env = info.Env();
  uint64_t snapId = 0;
  bool atSnap = ArgOptU64(info, 0, "snapId", &snapId);
  auto oids = std::make_shared<std::vector<std::string>>(ArgOids(info, 1, kObjectsPerCallMax));
  auto extents = std::make_shared<std::vector<std::vector<uint64_t>>>(ArgExtentLists(info, 2, 2, oids->size()));
  if (info.Length() < 4 || !info[3].IsBuffer()) throw Napi::TypeError::New(env, "target must be a Buffer");
  auto target = info[3].As<Napi::Buffer<char>>();
  uint64_t total = 0;
  for (auto& e : *extents)
    for (size_t k = 0; k < e.size(); k += 2) total += e[k + 1];
  if (total > target.Length()) throw Napi::RangeError::New(env, "the extents exceed the target buffer");
  char* base = target.Data();
  auto results = std::make_shared<std::vector<int>>(oids->size(), 0);
  auto st = this->st;
  Task* t = NewTask(
      env, "rados_read_op_operate", st->pool,
      [st, atSnap, snapId, oids, extents, base, results](TaskCtx& ctx) -> int {
        rados_ioctx_t io = nullptr;
        int r = OpenPrivateIoctx(st, &io, ctx);
        if (r < 0) return r;
        if (atSnap) rados_ioctx_snap_set_read(io, snapId);
        struct Pending {
          rados_read_op_t op = nullptr;
          rados_completion_t c = nullptr;
          std::vector<size_t> got;
          std::vector<int> prval;
          std::vector<char*> at;
        };
        std::vector<Pending> ops(oids->size());
        char* cursor = base;
        int submitError = 0;
        size_t submitted = 0;
        for (size_t i = 0; i < oids->size(); i++) {
          Pending& p = ops[i];
          auto& e = (*extents)[i];
          size_t n = e.size() / 2;
          p.got.assign(n, 0);
          p.prval.assign(n, 0);
          p.op = rados_create_read_op();
          for (size_t k = 0; k < n; k++) {
            p.at.push_back(cursor);
            rados_read_op_read(p.op, e[2 * k], e[2 * k + 1], cursor, &p.got[k], &p.prval[k]);
            cursor += e[2 * k + 1];
          }
          r = rados_aio_create_completion2(nullptr, nullptr, &p.c);
          if (r >= 0) r = rados_aio_read_op_operate(p.op, io, p.c, (*oids)[i].c_str(), 0);
          if (r < 0) {
            submitError = r;
            ctx.operation = "rados_aio_read_op_operate";
            ctx.detail = "object " + (*oids)[i];
            if (p.c != nullptr) rados_aio_release(p.c);
            p.c = nullptr;
            break;
          }
          submitted = i + 1;
        }
        for (size_t i = 0; i < ops.size(); i++) {
          Pending& p = ops[i];
          if (i < submitted && p.c != nullptr) {
            rados_aio_wait_for_complete(p.c);
            int rv = rados_aio_get_return_value(p.c);
            rados_aio_release(p.c);
            if (rv >= 0) {
              for (size_t k = 0; k < p.got.size(); k++) {
                if (p.prval[k] < 0) {
                  rv = p.prval[k];
                  break;
                }
                uint64_t len = (*extents)[i][2 * k + 1];
                if (p.got[k] < len) memset(p.at[k] + p.got[k], 0, len - p.got[k]);
              }
            }
            (*results)[i] = rv;
          } else {
            (*results)[i] = -ECANCELED;
          }
          if (p.op != nullptr) rados_release_read_op(p.op);
        }
        rados_ioctx_destroy(io);
        ctx.operation = "rados_read_op_operate";
        return submitError;
      },
      [results](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, results->size());
        for (size_t i = 0; i < results->size(); i++) a.Set(static_cast<uint32_t>(i), (*results)[i]);
        return a;
      });
  t->Hold(target);
  return t->Start();
}

// writeObjects(snapSeq, snapIds[] (newest first), oids, extents[[off, len, kind, ...]], data: Buffer)
// One write op per object with its extents: kind 0 writes the next `len`
// bytes of `data` (taken in order), kind 1 zeroes the range. The write
// snapshot context (the image's snapshots) makes the OSDs preserve what the
// snapshots hold, as librbd would. Fails with the first object's error; the
// other objects of the call are still waited for.
Napi::Value IoctxWrap::WriteObjects(const Napi::CallbackInfo& info) {
  OBJECTS_GUARD("rados_write_op_operate");
  Napi::Env env = info.Env();
  uint64_t snapSeq = ArgU64(info, 0, "snapSeq");
  if (info.Length() < 2 || !info[1].IsArray()) throw Napi::TypeError::New(env, "snapIds must be an array");
  auto snapIds = std::make_shared<std::vector<rados_snap_t>>();
  {
    Napi::Array a = info[1].As<Napi::Array>();
    for (uint32_t k = 0; k < a.Length(); k++) {
      Napi::Value v = a.Get(k);
      if (!v.IsNumber()) throw Napi::TypeError::New(env, "snapIds must be numbers");
      rados_snap_t id = static_cast<rados_snap_t>(v.As<Napi::Number>().DoubleValue());
      if (!snapIds->empty() && id >= snapIds->back())
        throw Napi::RangeError::New(env, "snapIds must be in descending order");
      if (id > snapSeq) throw Napi::RangeError::New(env, "snapIds must not exceed snapSeq");
      snapIds->push_back(id);
    }
  }
  auto oids = std::make_shared<std::vector<std::string>>(ArgOids(info, 2, kObjectsPerCallMax));
  auto extents = std::make_shared<std::vector<std::vector<uint64_t>>>(ArgExtentLists(info, 3, 3, oids->size()));
  if (info.Length() < 5 || !info[4].IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
  auto data = info[4].As<Napi::Buffer<char>>();
  uint64_t dataBytes = 0;
  for (auto& e : *extents) {
    for (size_t k = 0; k < e.size(); k += 3) {
      if (e[k + 2] > 1) throw Napi::RangeError::New(env, "extent kind must be 0 (data) or 1 (zeroes)");
      if (e[k + 2] == 0) dataBytes += e[k + 1];
    }
  }
  if (dataBytes > data.Length()) throw Napi::RangeError::New(env, "the data extents exceed the data buffer");
  const char* base = data.Data();
  auto st = this->st;
  Task* t = NewTask(
      env, "rados_write_op_operate", st->pool,
      [st, snapSeq, snapIds, oids, extents, base](TaskCtx& ctx) -> int {
        rados_ioctx_t io = nullptr;
        int r = OpenPrivateIoctx(st, &io, ctx);
        if (r < 0) return r;
        ctx.operation = "rados_ioctx_selfmanaged_snap_set_write_ctx";
        r = rados_ioctx_selfmanaged_snap_set_write_ctx(io, snapSeq, snapIds->data(),
                                                       static_cast<int>(snapIds->size()));
        if (r < 0) {
          rados_ioctx_destroy(io);
          return r;
        }
        ctx.operation = "rados_write_op_operate";
        std::vector<rados_write_op_t> ops(oids->size(), nullptr);
        std::vector<rados_completion_t> cs(oids->size(), nullptr);
        const char* cursor = base;
        int first = 0;
        for (size_t i = 0; i < oids->size(); i++) {
          auto& e = (*extents)[i];
          ops[i] = rados_create_write_op();
          for (size_t k = 0; k < e.size(); k += 3) {
            if (e[k + 2] == 0) {
              rados_write_op_write(ops[i], cursor, e[k + 1], e[k]);
              cursor += e[k + 1];
            } else {
              rados_write_op_zero(ops[i], e[k], e[k + 1]);
            }
          }
          r = rados_aio_create_completion2(nullptr, nullptr, &cs[i]);
          if (r >= 0) r = rados_aio_write_op_operate(ops[i], io, cs[i], (*oids)[i].c_str(), nullptr, 0);
          if (r < 0) {
            first = r;
            ctx.detail = "object " + (*oids)[i];
            if (cs[i] != nullptr) rados_aio_release(cs[i]);
            cs[i] = nullptr;
            break;
          }
        }
        for (size_t i = 0; i < oids->size(); i++) {
          if (cs[i] != nullptr) {
            rados_aio_wait_for_complete(cs[i]);
            int rv = rados_aio_get_return_value(cs[i]);
            rados_aio_release(cs[i]);
            if (rv < 0 && first == 0) {
              first = rv;
              ctx.detail = "object " + (*oids)[i];
            }
          }
          if (ops[i] != nullptr) rados_release_write_op(ops[i]);
        }
        rados_ioctx_destroy(io);
        return first;
      });
  t->Hold(data);
  return t->Start();
}

}  // namespace pumice
