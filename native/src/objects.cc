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
#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>

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

// ------------------------------------------------------------- copyObjects --
//
// copyObjects(source: Ioctx, readSnapId, snapSeq, snapIds[] (newest first),
//             srcOids[], dstOids[], extents[[srcOff, dstOff, len, kind, ...]],
//             blockBytes, inFlightMax, bytesInFlightMax)
//   -> number[] (per unit: data bytes written, or -1 when the source object
//      does not exist at readSnapId: nothing of that unit is written)
//
// A unit is one (source object, target object) pair with its extents. Each
// unit's copy extents (kind 0) are read from the source object at the
// snapshot in ONE read op; as soon as that read completes, the unit's ONE
// write op goes to the target object under the snapshot context: the read
// bytes split into runs of `blockBytes` blocks (from each extent's start) that
// are all zero (written as zeroes, never as data) or not (written as data),
// and kind 1 extents zeroed. Reads of later units overlap writes of earlier
// ones, at most `inFlightMax` units and `bytesInFlightMax` bytes of read
// buffers at once (one unit is always allowed), all from one worker thread
// that waits on librados's completions. Fails with the first error; units
// already in flight are waited for, none is started after it.
namespace {

struct CopyShared {
  std::mutex m;
  std::condition_variable cv;
  std::deque<std::pair<size_t, bool>> done;  // (unit, isWrite)
};

struct CopyCb {
  CopyShared* sh;
  size_t unit;
  bool isWrite;
};

// Runs on a librados thread. The worker waits for this callback to return
// (rados_aio_wait_for_complete_and_cb) before it frees anything it touches.
void CopyComplete(rados_completion_t, void* arg) {
  CopyCb* cb = static_cast<CopyCb*>(arg);
  std::lock_guard<std::mutex> lock(cb->sh->m);
  cb->sh->done.emplace_back(cb->unit, cb->isWrite);
  cb->sh->cv.notify_one();
}

struct CopyUnit {
  std::vector<char> buf;
  std::vector<size_t> got;
  std::vector<int> prval;
  rados_read_op_t rop = nullptr;
  rados_write_op_t wop = nullptr;
  rados_completion_t c = nullptr;
  CopyCb readCb{nullptr, 0, false};
  CopyCb writeCb{nullptr, 0, true};
  uint64_t dataBytes = 0;
  uint64_t readBytes = 0;
};

bool AllZero(const char* p, size_t n) {
  static const char zeros[4096] = {0};
  while (n > 0) {
    size_t k = n < sizeof(zeros) ? n : sizeof(zeros);
    if (memcmp(p, zeros, k) != 0) return false;
    p += k;
    n -= k;
  }
  return true;
}

}  // namespace

Napi::Value IoctxWrap::CopyObjects(const Napi::CallbackInfo& info) {
  OBJECTS_GUARD("rados_copy_objects");
  Napi::Env env = info.Env();
  AddonData* addonData = env.GetInstanceData<AddonData>();
  if (info.Length() < 1 || !info[0].IsObject() ||
      !info[0].As<Napi::Object>().InstanceOf(addonData->ioctxCtor.Value()))
    throw Napi::TypeError::New(env, "source must be an Ioctx");
  Napi::Object sourceObj = info[0].As<Napi::Object>();
  IoctxWrap* source = IoctxWrap::Unwrap(sourceObj);
  if (!source->lc.Usable()) return Rejected(env, EBADF, "rados_copy_objects", source->st->pool, "source ioctx is closed");
  uint64_t readSnapId = ArgU64(info, 1, "readSnapId");
  uint64_t snapSeq = ArgU64(info, 2, "snapSeq");
  if (info.Length() < 4 || !info[3].IsArray()) throw Napi::TypeError::New(env, "snapIds must be an array");
  auto snapIds = std::make_shared<std::vector<rados_snap_t>>();
  {
    Napi::Array a = info[3].As<Napi::Array>();
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
  auto srcOids = std::make_shared<std::vector<std::string>>(ArgOids(info, 4, kObjectsPerCallMax));
  auto dstOids = std::make_shared<std::vector<std::string>>(ArgOids(info, 5, kObjectsPerCallMax));
  if (dstOids->size() != srcOids->size())
    throw Napi::RangeError::New(env, "srcOids and dstOids must have the same length");
  auto extents = std::make_shared<std::vector<std::vector<uint64_t>>>(ArgExtentLists(info, 6, 4, srcOids->size()));
  uint64_t blockBytes = ArgU64(info, 7, "blockBytes");
  uint64_t inFlightMax = ArgU64(info, 8, "inFlightMax");
  uint64_t bytesMax = ArgU64(info, 9, "bytesInFlightMax");
  if (blockBytes == 0 || blockBytes > (64u << 20)) throw Napi::RangeError::New(env, "blockBytes must be 1 byte to 64 MiB");
  if (inFlightMax == 0) throw Napi::RangeError::New(env, "inFlightMax must be at least 1");
  for (auto& e : *extents) {
    for (size_t k = 0; k < e.size(); k += 4) {
      if (e[k + 3] > 1) throw Napi::RangeError::New(env, "extent kind must be 0 (copy) or 1 (zeroes)");
      if (e[k + 2] == 0) throw Napi::RangeError::New(env, "extent lengths must be positive");
      if (e[k + 2] > (1ull << 30)) throw Napi::RangeError::New(env, "an extent may not exceed 1 GiB");
    }
  }
  auto results = std::make_shared<std::vector<double>>(srcOids->size(), 0);
  auto st = this->st;
  auto sst = source->st;
  int64_t srcPoolId = rados_ioctx_get_id(sst->io);
  int64_t dstPoolId = rados_ioctx_get_id(st->io);
  lc.pending++;
  source->lc.pending++;
  auto* t = new Task(
      env, "rados_copy_objects", st->pool,
      [st, sst, srcPoolId, dstPoolId, readSnapId, snapSeq, snapIds, srcOids, dstOids, extents, blockBytes,
       inFlightMax, bytesMax, results](TaskCtx& ctx) -> int {
        rados_ioctx_t rio = nullptr, wio = nullptr;
        ctx.operation = "rados_ioctx_create2";
        int r = rados_ioctx_create2(sst->cluster->rados, srcPoolId, &rio);
        if (r < 0) return r;
        r = rados_ioctx_create2(st->cluster->rados, dstPoolId, &wio);
        if (r < 0) {
          rados_ioctx_destroy(rio);
          return r;
        }
        rados_ioctx_snap_set_read(rio, readSnapId);
        ctx.operation = "rados_ioctx_selfmanaged_snap_set_write_ctx";
        r = rados_ioctx_selfmanaged_snap_set_write_ctx(wio, snapSeq, snapIds->data(), static_cast<int>(snapIds->size()));
        if (r < 0) {
          rados_ioctx_destroy(rio);
          rados_ioctx_destroy(wio);
          return r;
        }
        CopyShared sh;
        const size_t n = srcOids->size();
        std::vector<CopyUnit> units(n);
        size_t next = 0, inFlight = 0;
        uint64_t bytesHeld = 0;
        int first = 0;
        auto fail = [&](int rv, const char* op, size_t i, bool source) {
          if (first != 0) return;
          first = rv;
          ctx.operation = op;
          ctx.detail = std::string("object ") + (source ? (*srcOids)[i] : (*dstOids)[i]);
        };
        auto release = [&](CopyUnit& u) {
          if (u.c != nullptr) rados_aio_release(u.c);
          u.c = nullptr;
          if (u.rop != nullptr) rados_release_read_op(u.rop);
          u.rop = nullptr;
          if (u.wop != nullptr) rados_release_write_op(u.wop);
          u.wop = nullptr;
          bytesHeld -= u.readBytes;
          u.readBytes = 0;
          std::vector<char>().swap(u.buf);
          inFlight--;
        };
        // The unit's write op: copy extents from its buffer as zero and data runs, kind 1 zeroed.
        auto submitWrite = [&](size_t i) -> int {
          CopyUnit& u = units[i];
          auto& e = (*extents)[i];
          u.wop = rados_create_write_op();
          const char* cursor = u.buf.data();
          for (size_t k = 0; k < e.size(); k += 4) {
            uint64_t dst = e[k + 1], len = e[k + 2];
            if (e[k + 3] == 1) {
              rados_write_op_zero(u.wop, dst, len);
              continue;
            }
            uint64_t runStart = 0;
            int runZero = -1;
            for (uint64_t at = 0; at < len; at += blockBytes) {
              uint64_t end = std::min(len, at + blockBytes);
              int zero = AllZero(cursor + at, end - at) ? 1 : 0;
              if (runZero != -1 && zero != runZero) {
                if (runZero == 1) rados_write_op_zero(u.wop, dst + runStart, at - runStart);
                else {
                  rados_write_op_write(u.wop, cursor + runStart, at - runStart, dst + runStart);
                  u.dataBytes += at - runStart;
                }
                runStart = at;
              }
              runZero = zero;
            }
            if (runZero == 1) rados_write_op_zero(u.wop, dst + runStart, len - runStart);
            else {
              rados_write_op_write(u.wop, cursor + runStart, len - runStart, dst + runStart);
              u.dataBytes += len - runStart;
            }
            cursor += len;
          }
          u.writeCb = {&sh, i, true};
          int rv = rados_aio_create_completion2(&u.writeCb, CopyComplete, &u.c);
          if (rv >= 0) rv = rados_aio_write_op_operate(u.wop, wio, u.c, (*dstOids)[i].c_str(), nullptr, 0);
          return rv;
        };
        auto submitRead = [&](size_t i) -> int {
          CopyUnit& u = units[i];
          auto& e = (*extents)[i];
          uint64_t total = 0;
          size_t copies = 0;
          for (size_t k = 0; k < e.size(); k += 4)
            if (e[k + 3] == 0) total += e[k + 2], copies++;
          if (copies == 0) return submitWrite(i);  // only zero extents: nothing to read
          u.buf.resize(total);
          u.readBytes = total;
          bytesHeld += total;
          u.got.assign(copies, 0);
          u.prval.assign(copies, 0);
          u.rop = rados_create_read_op();
          char* cursor = u.buf.data();
          size_t c = 0;
          for (size_t k = 0; k < e.size(); k += 4) {
            if (e[k + 3] != 0) continue;
            rados_read_op_read(u.rop, e[k], e[k + 2], cursor, &u.got[c], &u.prval[c]);
            cursor += e[k + 2];
            c++;
          }
          u.readCb = {&sh, i, false};
          int rv = rados_aio_create_completion2(&u.readCb, CopyComplete, &u.c);
          if (rv >= 0) rv = rados_aio_read_op_operate(u.rop, rio, u.c, (*srcOids)[i].c_str(), 0);
          return rv;
        };
        auto unitBytes = [&](size_t i) {
          uint64_t total = 0;
          auto& e = (*extents)[i];
          for (size_t k = 0; k < e.size(); k += 4)
            if (e[k + 3] == 0) total += e[k + 2];
          return total;
        };
        for (;;) {
          while (first == 0 && next < n && inFlight < inFlightMax &&
                 (inFlight == 0 || bytesHeld + unitBytes(next) <= bytesMax)) {
            size_t i = next++;
            inFlight++;
            int rv = submitRead(i);
            if (rv < 0) {
              fail(rv, units[i].rop != nullptr ? "rados_aio_read_op_operate" : "rados_aio_write_op_operate", i, units[i].rop != nullptr);
              release(units[i]);
            }
          }
          if (inFlight == 0) break;
          std::pair<size_t, bool> ev;
          {
            std::unique_lock<std::mutex> lock(sh.m);
            sh.cv.wait(lock, [&] { return !sh.done.empty(); });
            ev = sh.done.front();
            sh.done.pop_front();
          }
          size_t i = ev.first;
          CopyUnit& u = units[i];
          rados_aio_wait_for_complete_and_cb(u.c);
          int rv = rados_aio_get_return_value(u.c);
          if (ev.second) {  // write done
            if (rv < 0) fail(rv, "rados_write_op_operate", i, false);
            else (*results)[i] = static_cast<double>(u.dataBytes);
            release(u);
            continue;
          }
          // read done
          rados_aio_release(u.c);
          u.c = nullptr;
          rados_release_read_op(u.rop);
          u.rop = nullptr;
          if (rv >= 0) {
            for (size_t k = 0; k < u.prval.size(); k++) {
              if (u.prval[k] < 0) {
                rv = u.prval[k];
                break;
              }
            }
          }
          if (rv == -ENOENT) {
            (*results)[i] = -1;
            release(u);
            continue;
          }
          if (rv < 0 || first != 0) {
            if (rv < 0) fail(rv, "rados_read_op_operate", i, true);
            release(u);
            continue;
          }
          {  // short object: the rest of each extent reads as zeros
            auto& e = (*extents)[i];
            char* cursor = u.buf.data();
            size_t c = 0;
            for (size_t k = 0; k < e.size(); k += 4) {
              if (e[k + 3] != 0) continue;
              if (u.got[c] < e[k + 2]) memset(cursor + u.got[c], 0, e[k + 2] - u.got[c]);
              cursor += e[k + 2];
              c++;
            }
          }
          rv = submitWrite(i);
          if (rv < 0) {
            fail(rv, "rados_aio_write_op_operate", i, false);
            release(u);
          }
        }
        rados_ioctx_destroy(rio);
        rados_ioctx_destroy(wio);
        if (first == 0) ctx.operation = "rados_copy_objects";
        return first;
      },
      [results](Napi::Env env) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, results->size());
        for (size_t i = 0; i < results->size(); i++) a.Set(static_cast<uint32_t>(i), (*results)[i]);
        return a;
      },
      [this, source, env]() {
        OpDone(env);
        if (source != this) source->OpDone(env);
      });
  if (source == this) lc.pending--;  // same ioctx for source and target: count once
  t->Hold(Value());
  t->Hold(sourceObj);
  return t->Start();
}

}  // namespace pumice
