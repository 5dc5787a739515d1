// Shared declarations of the pumice_rbd Node-API addon (librados + librbd).
//
// Ownership model
// ---------------
// Native handles live in small state structs owned through std::shared_ptr:
//   ClusterState (rados_t) <- IoctxState (rados_ioctx_t) / ImageState (rbd_image_t)
// A child keeps its cluster alive, so rados_shutdown() never runs while an
// ioctx or an image still uses it. ClusterState::children counts the open
// ioctxs and images; an explicit shutdown() is refused (EBUSY) while any is
// open. (librbd duplicates the ioctx an image is opened with, so an image does
// not depend on the IoctxState it was opened from.)
//
// Every JS wrapper has a Lifecycle touched on the JS thread only: `pending`
// counts operations in flight (thread-pool tasks and librbd aio), close()
// marks it CLOSING (new operations are refused with EBADF) and the actual
// close runs once pending drops to zero. An operation in flight holds a strong
// reference to its wrapper, so a wrapper is never garbage-collected with work
// in flight; a wrapper collected while still open is closed on a detached
// thread (the event loop never blocks on the network).
#pragma once

#include <napi.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace pumice {

// ---------------------------------------------------------------- errors --

// "EPERM" for 1, ..., "E<n>" when unknown.
std::string ErrnoName(int err);
// JS Error with .code (errno name), .errno (positive), .operation and a message
// "<operation> <subject>: <strerror> (<CODE>)[: detail]".
Napi::Error MakeError(Napi::Env env, int err, const std::string& operation,
                      const std::string& subject, const std::string& detail = "");
// Rejected promise with such an error (used for refusals before any work).
Napi::Value Rejected(Napi::Env env, int err, const std::string& operation,
                     const std::string& subject, const std::string& detail = "");

// Argument helpers: throw a TypeError (-> rejection in the TS async wrappers).
uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* what);
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what);
// Optional string: undefined/null -> has=false.
bool ArgOptString(const Napi::CallbackInfo& info, size_t i, const char* what, std::string* out);
bool ArgOptU64(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t* out);

// --------------------------------------------------------- native states --

struct ClusterState {
  rados_t rados = nullptr;
  std::atomic<int> children{0};
  ~ClusterState() {
    if (rados != nullptr) rados_shutdown(rados);
  }
};
using ClusterPtr = std::shared_ptr<ClusterState>;

struct IoctxState {
  ClusterPtr cluster;
  rados_ioctx_t io = nullptr;
  std::string pool;
  void Destroy() {
    if (io != nullptr) {
      rados_ioctx_destroy(io);
      io = nullptr;
      cluster->children--;
    }
  }
  ~IoctxState() { Destroy(); }
};
using IoctxPtr = std::shared_ptr<IoctxState>;

struct ImageState {
  ClusterPtr cluster;
  rbd_image_t image = nullptr;
  std::string spec;  // "pool/name" or "pool/name@snap", for messages
  int Close() {
    int r = 0;
    if (image != nullptr) {
      r = rbd_close(image);  // frees the handle whatever it returns
      image = nullptr;
      cluster->children--;
    }
    return r;
  }
  ~ImageState() { Close(); }
};
using ImagePtr = std::shared_ptr<ImageState>;

// Drop the last reference of a state whose destructor may block (rbd_close,
// rados_shutdown) on a detached thread instead of the JS thread.
template <typename T>
void DropOffThread(std::shared_ptr<T>& p) {
  if (!p) return;
  std::thread([q = std::move(p)]() mutable { q.reset(); }).detach();
}

// ------------------------------------------------------------- lifecycle --

struct Lifecycle {
  enum State { OPEN, CLOSING, CLOSED };
  State state = OPEN;
  int pending = 0;
  std::vector<Napi::Promise::Deferred> waiters;  // close() calls waiting
  bool Usable() const { return state == OPEN; }
};

// ------------------------------------------------------------------ tasks --

// Context a thread-pool task may fill: which call failed, extra detail.
struct TaskCtx {
  std::string operation;
  std::string detail;
};

// A promise-returning unit of blocking work run on the libuv thread pool.
//   run   (worker thread): returns >= 0 or -errno
//   build (JS thread)    : turns the result into a JS value (optional)
//   done  (JS thread)    : always called first on completion (bookkeeping)
class Task : public Napi::AsyncWorker {
 public:
  using Run = std::function<int(TaskCtx&)>;
  using Build = std::function<Napi::Value(Napi::Env)>;
  using Done = std::function<void()>;

  Task(Napi::Env env, std::string operation, std::string subject, Run run,
       Build build = nullptr, Done done = nullptr)
      : Napi::AsyncWorker(env, "pumice_rbd"),
        deferred_(Napi::Promise::Deferred::New(env)),
        subject_(std::move(subject)),
        run_(std::move(run)),
        build_(std::move(build)),
        done_(std::move(done)) {
    ctx_.operation = std::move(operation);
  }

  // Keep a JS object alive until the task completes.
  Task* Hold(Napi::Object obj) {
    keep_.emplace_back(Napi::Persistent(obj));
    return this;
  }

  Napi::Promise Start() {
    Napi::Promise p = deferred_.Promise();
    Queue();
    return p;
  }

 protected:
  void Execute() override {
    try {
      rc_ = run_(ctx_);
    } catch (const std::bad_alloc&) {
      rc_ = -ENOMEM;
    } catch (...) {
      rc_ = -EIO;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (done_) done_();
    if (rc_ < 0) {
      deferred_.Reject(MakeError(env, -rc_, ctx_.operation, subject_, ctx_.detail).Value());
      return;
    }
    try {
      deferred_.Resolve(build_ ? build_(env) : env.Undefined());
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override {
    if (done_) done_();
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string subject_;
  Run run_;
  Build build_;
  Done done_;
  TaskCtx ctx_;
  int rc_ = 0;
  std::vector<Napi::ObjectReference> keep_;
};

// ----------------------------------------------------------- addon data --

struct AioOp;
struct AddonData;
void AioCallJs(Napi::Env env, Napi::Function fn, AddonData* data, AioOp* op);
using AioTsfn = Napi::TypedThreadSafeFunction<AddonData, AioOp, AioCallJs>;

struct AddonData {
  Napi::FunctionReference clusterCtor;
  Napi::FunctionReference ioctxCtor;
  Napi::FunctionReference imageCtor;
  AioTsfn aioTsfn;      // delivers librbd aio completions to the JS thread
  int aioInflight = 0;  // the TSFN keeps the loop alive only while > 0
  void AioStarted(Napi::Env env);
  void AioFinished(Napi::Env env);
};

// ---------------------------------------------------------------- classes --

class ClusterWrap : public Napi::ObjectWrap<ClusterWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Value Connect(const Napi::CallbackInfo& info);
  explicit ClusterWrap(const Napi::CallbackInfo& info);
  ~ClusterWrap() override;

  ClusterPtr st;
  Lifecycle lc;

 private:
  Napi::Value Fsid(const Napi::CallbackInfo& info);
  Napi::Value ClusterStat(const Napi::CallbackInfo& info);
  Napi::Value MonCommand(const Napi::CallbackInfo& info);
  Napi::Value PoolStat(const Napi::CallbackInfo& info);
  Napi::Value OpenIoctx(const Napi::CallbackInfo& info);
  Napi::Value GetAddrs(const Napi::CallbackInfo& info);
  Napi::Value InstanceId(const Napi::CallbackInfo& info);
  Napi::Value OpenHandles(const Napi::CallbackInfo& info);
  Napi::Value Shutdown(const Napi::CallbackInfo& info);
  // Common start of an operation: refuses when shut down; otherwise pending++.
  Task* NewTask(Napi::Env env, const std::string& op, const std::string& subject,
                Task::Run run, Task::Build build = nullptr);
};

class IoctxWrap : public Napi::ObjectWrap<IoctxWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit IoctxWrap(const Napi::CallbackInfo& info);
  ~IoctxWrap() override;

  IoctxPtr st;
  Lifecycle lc;

 private:
  Napi::Value PoolName(const Napi::CallbackInfo& info);
  Napi::Value PoolId(const Napi::CallbackInfo& info);
  Napi::Value CreateImage(const Napi::CallbackInfo& info);
  Napi::Value RemoveImage(const Napi::CallbackInfo& info);
  Napi::Value RenameImage(const Napi::CallbackInfo& info);
  Napi::Value ListImages(const Napi::CallbackInfo& info);
  Napi::Value OpenImage(const Napi::CallbackInfo& info);
  Napi::Value Clone(const Napi::CallbackInfo& info);
  Napi::Value TrashMove(const Napi::CallbackInfo& info);
  Napi::Value TrashList(const Napi::CallbackInfo& info);
  Napi::Value TrashRemove(const Napi::CallbackInfo& info);
  Napi::Value TrashRestore(const Napi::CallbackInfo& info);
  Napi::Value GroupCreate(const Napi::CallbackInfo& info);       // group.cc
  Napi::Value GroupRemove(const Napi::CallbackInfo& info);       // group.cc
  Napi::Value GroupList(const Napi::CallbackInfo& info);         // group.cc
  Napi::Value GroupImageAdd(const Napi::CallbackInfo& info);     // group.cc
  Napi::Value GroupImageRemove(const Napi::CallbackInfo& info);  // group.cc
  Napi::Value GroupImageList(const Napi::CallbackInfo& info);    // group.cc
  Napi::Value GroupSnapCreate(const Napi::CallbackInfo& info);   // group.cc
  Napi::Value GroupSnapRemove(const Napi::CallbackInfo& info);   // group.cc
  Napi::Value GroupSnapList(const Napi::CallbackInfo& info);     // group.cc
  Napi::Value ReadObjects(const Napi::CallbackInfo& info);   // objects.cc
  Napi::Value WriteObjects(const Napi::CallbackInfo& info);  // objects.cc
  Napi::Value CopyObjects(const Napi::CallbackInfo& info);   // objects.cc
  Napi::Value Close(const Napi::CallbackInfo& info);
  void OpDone(Napi::Env env);
  void StartClose(Napi::Env env);
  Task* NewTask(Napi::Env env, const std::string& op, const std::string& subject,
                Task::Run run, Task::Build build = nullptr);
};

class ImageWrap : public Napi::ObjectWrap<ImageWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit ImageWrap(const Napi::CallbackInfo& info);
  ~ImageWrap() override;

  ImagePtr st;
  Lifecycle lc;
  AddonData* addon = nullptr;

  void OpDone(Napi::Env env);

 private:
  Napi::Value Spec(const Napi::CallbackInfo& info);
  Napi::Value InFlight(const Napi::CallbackInfo& info);
  Napi::Value Stat(const Napi::CallbackInfo& info);
  Napi::Value Features(const Napi::CallbackInfo& info);
  Napi::Value Resize(const Napi::CallbackInfo& info);
  Napi::Value SnapCreate(const Napi::CallbackInfo& info);
  Napi::Value SnapRemove(const Napi::CallbackInfo& info);
  Napi::Value SnapProtect(const Napi::CallbackInfo& info);
  Napi::Value SnapUnprotect(const Napi::CallbackInfo& info);
  Napi::Value SnapIsProtected(const Napi::CallbackInfo& info);
  Napi::Value SnapList(const Napi::CallbackInfo& info);
  Napi::Value SnapRollback(const Napi::CallbackInfo& info);
  Napi::Value SnapRename(const Napi::CallbackInfo& info);
  Napi::Value Flatten(const Napi::CallbackInfo& info);
  Napi::Value ListChildren(const Napi::CallbackInfo& info);
  Napi::Value ParentInfo(const Napi::CallbackInfo& info);
  Napi::Value DiffIterate(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value Discard(const Napi::CallbackInfo& info);
  Napi::Value WriteZeroes(const Napi::CallbackInfo& info);
  Napi::Value Flush(const Napi::CallbackInfo& info);
  Napi::Value LockOwners(const Napi::CallbackInfo& info);
  Napi::Value LockBreak(const Napi::CallbackInfo& info);
  Napi::Value LockAcquire(const Napi::CallbackInfo& info);
  Napi::Value LockRelease(const Napi::CallbackInfo& info);
  Napi::Value IsExclusiveLockOwner(const Napi::CallbackInfo& info);
  Napi::Value GetGroup(const Napi::CallbackInfo& info);            // group.cc
  Napi::Value SnapGroupNamespace(const Napi::CallbackInfo& info);  // group.cc
  Napi::Value SnapSetById(const Napi::CallbackInfo& info);         // group.cc
  Napi::Value Close(const Napi::CallbackInfo& info);
  void StartClose(Napi::Env env);
  Task* NewTask(Napi::Env env, const std::string& op, Task::Run run,
                Task::Build build = nullptr);
  Napi::Value SubmitAio(const Napi::CallbackInfo& info, int kind);
};

// Builds wrappers around freshly opened handles (JS thread).
Napi::Object NewIoctxObject(Napi::Env env, IoctxPtr st);
Napi::Object NewImageObject(Napi::Env env, ImagePtr st);

}  // namespace pumice
