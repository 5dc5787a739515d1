// Holes and data of local (sparse) files, for the NBD export's base:allocation metadata context:
// lseek(SEEK_DATA / SEEK_HOLE), which Node does not offer. Nothing here uses librbd; it lives in
// this addon because it is the one native module the project builds.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "common.h"

namespace pumice {

static int ArgFd(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), "fd must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 2147483647.0 || std::floor(d) != d)
    throw Napi::TypeError::New(info.Env(), "fd must be a non-negative integer");
  return static_cast<int>(d);
}

// lseek(fd, offset, whence): the offset found, -1 at ENXIO (no data / offset at or past the end),
// -errno otherwise.
static int64_t SeekOnce(int fd, uint64_t offset, int whence) {
  off_t r = lseek(fd, static_cast<off_t>(offset), whence);
  if (r >= 0) return static_cast<int64_t>(r);
  return errno == ENXIO ? -1 : -static_cast<int64_t>(errno);
}

// fileExtents(fd, offset, length, maxExtents): Promise<number[]>, flat pairs [length, hole (0/1), ...]
// of consecutive extents from `offset`, alternating data and hole, together at most `length` bytes
// (less when maxExtents were found first). Past the end of the file reads as a hole. Runs on the
// thread pool: one job for the whole walk, however many lseeks it takes.
static Napi::Value FileExtents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint64_t offset = ArgU64(info, 1, "offset");
  uint64_t length = ArgU64(info, 2, "length");
  uint64_t max = ArgU64(info, 3, "maxExtents");
  if (max == 0 || max > 1u << 20) throw Napi::RangeError::New(env, "maxExtents must be 1 to 1048576");
  auto out = std::make_shared<std::vector<uint64_t>>();
  auto run = [fd, offset, length, max, out](TaskCtx& ctx) -> int {
    const uint64_t end = offset + length;
    uint64_t pos = offset;
    while (pos < end && out->size() / 2 < max) {
      int64_t data = SeekOnce(fd, pos, SEEK_DATA);
      if (data < -1) {
        ctx.detail = "at offset " + std::to_string(pos);
        return static_cast<int>(data);
      }
      uint64_t next;
      bool hole;
      if (data == -1 || static_cast<uint64_t>(data) > pos) {
        // A hole up to the next data, or to the end (no data after pos).
        hole = true;
        next = data == -1 ? end : std::min(end, static_cast<uint64_t>(data));
      } else {
        int64_t h = SeekOnce(fd, pos, SEEK_HOLE);
        if (h < -1) {
          ctx.detail = "at offset " + std::to_string(pos);
          return static_cast<int>(h);
        }
        hole = false;
        // -1: the file shrank under us; the rest is past its end, a hole next turn.
        next = h <= static_cast<int64_t>(pos) ? pos + 1 : std::min(end, static_cast<uint64_t>(h));
      }
      if (!out->empty() && (*out)[out->size() - 1] == (hole ? 1u : 0u)) {
        (*out)[out->size() - 2] += next - pos;  // same kind as the previous extent: extend it
      } else {
        out->push_back(next - pos);
        out->push_back(hole ? 1 : 0);
      }
      pos = next;
    }
    return 0;
  };
  auto build = [out](Napi::Env e) -> Napi::Value {
    Napi::Array a = Napi::Array::New(e, out->size());
    for (size_t i = 0; i < out->size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(e, static_cast<double>((*out)[i])));
    return a;
  };
  auto* task = new Task(env, "fileExtents", "fd " + std::to_string(fd), run, build);
  return task->Start();
}

void RegisterFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("fileExtents", Napi::Function::New(env, FileExtents, "fileExtents"));
}

}  // namespace pumice
