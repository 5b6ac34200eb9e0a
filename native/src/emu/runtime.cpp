// runtime.cpp — the CUDA emulation's scheduler (fibers, barriers, warp rendezvous) and the
// runtime API mapped onto host memory. See cuda_emu.h for the model.
#include <dlfcn.h>
#include <omp.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "emu/cuda_emu.h"

// x86-64 System V context switch: saves the callee-saved registers and the stack pointer of the
// running context in *save, resumes the one whose stack pointer is `to`.
extern "C" void ql_emu_switch(void** save, void* to);
extern "C" void ql_emu_trampoline();
asm(R"(
  .text
  .p2align 4
  .globl ql_emu_switch
  .hidden ql_emu_switch
  .type ql_emu_switch,@function
ql_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size ql_emu_switch, .-ql_emu_switch

  .p2align 4
  .globl ql_emu_trampoline
  .hidden ql_emu_trampoline
  .type ql_emu_trampoline,@function
ql_emu_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size ql_emu_trampoline, .-ql_emu_trampoline
)");

namespace ql_emu {

thread_local Fiber* t_fiber __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {

enum FiberState { kRunnable = 0, kBlockWait = 1, kWarpWait = 2, kDone = 3 };

size_t stack_bytes() {
  static const size_t bytes = [] {
    const char* e = getenv("QL_EMU_STACK_KB");
    long kb = e ? atol(e) : 64;
    if (kb < 16) kb = 16;
    return size_t(kb) * 1024;
  }();
  return bytes;
}

int g_threads = 0;  // OS threads running blocks; 0 = OpenMP default

// QL_EMU_SCHEDULE=reverse runs the threads of each warp (and the warps of a block) in reverse
// order between barriers: a race that the default order hides (a read of a shared value some
// higher thread writes without a barrier in between) shows up in the other.
int g_check = -1;  // -1: not read yet
bool barrier_check() {
  int r = __atomic_load_n(&g_check, __ATOMIC_RELAXED);
  if (r < 0) {
    const char* e = getenv("QL_EMU_CHECK");
    r = e && e[0] == '0' ? 0 : 1;  // on unless QL_EMU_CHECK=0
    __atomic_store_n(&g_check, r, __ATOMIC_RELAXED);
  }
  return r == 1;
}
thread_local bool t_launch_failed = false;

int g_reverse = -1;  // -1: not read yet
bool reverse_order() {
  int r = __atomic_load_n(&g_reverse, __ATOMIC_RELAXED);
  if (r < 0) {
    const char* e = getenv("QL_EMU_SCHEDULE");
    r = e && strcmp(e, "reverse") == 0 ? 1 : 0;
    __atomic_store_n(&g_reverse, r, __ATOMIC_RELAXED);
  }
  return r == 1;
}

// Per OS thread: the scheduler's saved context, fiber stacks (reused across launches), the
// block being run and its shared memory.
struct Worker {
  void* sched_sp = nullptr;
  std::vector<unsigned char*> stacks;
  std::vector<Fiber> fibers;
  Block* block = nullptr;
  std::vector<unsigned char> dynamic_shared;
  unsigned char* static_shared = nullptr;
  KernelBody body = nullptr;
  void* closure = nullptr;
  Worker() {
    block = new Block();
    static_shared = static_cast<unsigned char*>(aligned_alloc(64, kStaticShared));
  }
  ~Worker() {
    for (unsigned char* s : stacks) munmap(s, stack_bytes() + 4096);
    delete block;
    free(static_shared);
  }
  unsigned char* stack(size_t i) {
    while (stacks.size() <= i) {
      size_t bytes = stack_bytes() + 4096;
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) trap("cannot map a fiber stack");
      mprotect(p, 4096, PROT_NONE);  // guard page below the stack
      stacks.push_back(static_cast<unsigned char*>(p));
    }
    return stacks[i];
  }
};
thread_local Worker* t_worker __attribute__((tls_model("initial-exec"))) = nullptr;
Worker& worker() {
  if (!t_worker) t_worker = new Worker();
  return *t_worker;
}

void park(int state) {
  Fiber* f = t_fiber;
  f->state = state;
  ql_emu_switch(&f->sp, t_worker->sched_sp);
}

extern "C" void ql_emu_fiber_main(Fiber* f) {
  Worker& w = *t_worker;
  w.body(w.closure);
  f->state = kDone;
  ql_emu_switch(&f->sp, w.sched_sp);
  trap("a finished fiber was resumed");
}

void resume(Worker& w, Fiber* f) {
  t_fiber = f;
  ql_emu_switch(&w.sched_sp, f->sp);
  t_fiber = nullptr;
}

void run_block(Worker& w, dim3 grid, dim3 bdim, size_t shmem, unsigned bx, unsigned by, unsigned bz) {
  Block& b = *w.block;
  b.block_idx = dim3(bx, by, bz);
  b.grid_dim = grid;
  b.block_dim = bdim;
  b.static_shared = w.static_shared;
  // the whole arena, not just the declared arrays: a read past an array's end shows up too
  memset(w.static_shared, 0xff, kStaticShared);
  if (w.dynamic_shared.size() < shmem + 16) w.dynamic_shared.resize(shmem + 16);
  b.dynamic_shared = w.dynamic_shared.data();
  b.dynamic_bytes = shmem;
  memset(b.dynamic_shared, 0xff, shmem);
  const int n = int(bdim.x * bdim.y * bdim.z);
  const int nwarps = (n + kWarp - 1) / kWarp;
  for (int i = 0; i < nwarps; i++) {
    b.warps[i].phase = 0;
    b.warps[i].lanes = (i == nwarps - 1) ? n - i * kWarp : kWarp;
  }
  if (int(w.fibers.size()) < n) w.fibers.resize(n);
  const size_t sbytes = stack_bytes();
  for (int i = 0; i < n; i++) {
    Fiber& f = w.fibers[i];
    f.linear = i;
    f.thread_idx = dim3(i % bdim.x, (i / bdim.x) % bdim.y, i / (bdim.x * bdim.y));
    f.lane = i % kWarp;
    f.warp = i / kWarp;
    f.shared_cursor = 0;
    f.state = kRunnable;
    f.block = &b;
    // stack tops staggered by 64..4032 bytes so fibers' hot frames do not all map to the same
    // cache sets (the stacks themselves are 64 KiB aligned)
    unsigned char* top = w.stack(i) + 4096 + sbytes - size_t((i * 7) % 63) * 64;  // 16-aligned
    void** sp = reinterpret_cast<void**>(top - 72);
    sp[0] = nullptr;                                           // r15
    sp[1] = nullptr;                                           // r14
    sp[2] = reinterpret_cast<void*>(&ql_emu_fiber_main);       // r13: function
    sp[3] = &f;                                                // r12: argument
    sp[4] = nullptr;                                           // rbx
    sp[5] = nullptr;                                           // rbp
    sp[6] = reinterpret_cast<void*>(&ql_emu_trampoline);       // return address
    f.sp = sp;
  }
  Fiber* fib = w.fibers.data();
  const bool rev = reverse_order();
  for (;;) {
    for (int wk = 0; wk < nwarps; wk++) {
      const int wi = rev ? nwarps - 1 - wk : wk;
      const int lo = wi * kWarp, hi = lo + b.warps[wi].lanes;
      for (;;) {
        for (int k = lo; k < hi; k++) {
          const int i = rev ? hi - 1 - (k - lo) : k;
          if (fib[i].state == kRunnable) resume(w, &fib[i]);
        }
        int warp_wait = 0, block_wait = 0;
        for (int i = lo; i < hi; i++) {
          warp_wait += fib[i].state == kWarpWait;
          block_wait += fib[i].state == kBlockWait;
        }
        if (warp_wait == 0) break;
        if (block_wait != 0)
          trap("warp collective: some lanes wait in a warp operation while others wait in __syncthreads");
        b.warps[wi].phase++;
        for (int i = lo; i < hi; i++)
          if (fib[i].state == kWarpWait) fib[i].state = kRunnable;
      }
    }
    int waiting = 0;
    void* site = nullptr;
    const bool check = barrier_check();
    for (int i = 0; i < n; i++)
      if (fib[i].state == kBlockWait) {
        fib[i].state = kRunnable;
        if (check) {
          if (waiting == 0) site = fib[i].barrier_site;
          else if (fib[i].barrier_site != site) {
            if (!t_launch_failed) {
              Dl_info a{}, c{};
              dladdr(site, &a);
              dladdr(fib[i].barrier_site, &c);
              fprintf(stderr,
                      "cudaemu: block (%u,%u,%u): threads wait in different __syncthreads() calls "
                      "(%s+%#lx, %s+%#lx; QL_EMU_CHECK=0 turns this check off)\n",
                      bx, by, bz, a.dli_fname ? a.dli_fname : "?",
                      (unsigned long)((char*)site - (char*)a.dli_fbase), c.dli_fname ? c.dli_fname : "?",
                      (unsigned long)((char*)fib[i].barrier_site - (char*)c.dli_fbase));
            }
            t_launch_failed = true;
          }
        }
        waiting++;
      }
    if (waiting == 0) break;
  }
}

}  // namespace

void set_threads(int n) { g_threads = n; }
void set_barrier_check(bool on) { __atomic_store_n(&g_check, on ? 1 : 0, __ATOMIC_RELAXED); }
void set_reverse_schedule(bool reverse) { __atomic_store_n(&g_reverse, reverse ? 1 : 0, __ATOMIC_RELAXED); }
cudaError_t& last_error() {
  static thread_local cudaError_t e = cudaSuccess;
  return e;
}

[[noreturn]] void trap(const char* what) {
  fprintf(stderr, "cudaemu: %s\n", what);
  abort();
}

__attribute__((noinline)) void block_barrier() {
  t_fiber->barrier_site = __builtin_return_address(0);
  park(kBlockWait);
}
void warp_barrier() { park(kWarpWait); }

void* shared_static(size_t bytes, size_t align) {
  Fiber* f = t_fiber;
  size_t at = (f->shared_cursor + align - 1) & ~(align - 1);
  if (at + bytes > kStaticShared) trap("static shared memory beyond 48 KiB");
  f->shared_cursor = at + bytes;
  return f->block->static_shared + at;
}

void* shared_dynamic() { return t_fiber->block->dynamic_shared; }

namespace {

// The blocks of one launch, claimed one at a time by the calling thread and the pool's workers.
struct Job {
  dim3 grid, block;
  size_t shmem;
  KernelBody body;
  void* closure;
  int64_t nblocks;
  std::atomic<int64_t> next{0}, finished{0};
  std::atomic<bool> failed{false};
  int users = 0;  // workers holding the job (guarded by the pool's mutex)
};

// Worker threads that help with a launch's blocks. The caller claims blocks too and waits only
// for blocks already claimed: a worker that the OS has not run yet never delays a launch (an
// OpenMP end-of-region barrier would wait a whole time slice for it on a loaded machine).
struct Pool {
  std::mutex mu;
  std::condition_variable wake, idle;
  Job* job = nullptr;
  uint64_t generation = 0;
  int workers = 0;

  static void run_blocks(Job& j) {
    Worker& w = worker();
    w.body = j.body;
    w.closure = j.closure;
    for (;;) {
      const int64_t bi = j.next.fetch_add(1);
      if (bi >= j.nblocks) break;
      const unsigned bx = unsigned(bi % j.grid.x), by = unsigned((bi / j.grid.x) % j.grid.y),
                     bz = unsigned(bi / (int64_t(j.grid.x) * j.grid.y));
      run_block(w, j.grid, j.block, j.shmem, bx, by, bz);
      if (t_launch_failed) {
        t_launch_failed = false;
        j.failed.store(true);
      }
      j.finished.fetch_add(1);
    }
  }
  void worker_loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      wake.wait(lk, [&] { return generation != seen; });
      seen = generation;
      Job* j = job;
      if (!j) continue;
      j->users++;
      lk.unlock();
      run_blocks(*j);
      lk.lock();
      if (--j->users == 0) idle.notify_all();
    }
  }
  void ensure(int n) {  // n helper threads (never shrinks)
    std::lock_guard<std::mutex> lk(mu);
    while (workers < n) {
      std::thread([this] { worker_loop(); }).detach();
      workers++;
    }
  }
  void run(Job& j, int helpers) {
    ensure(helpers);
    {
      std::lock_guard<std::mutex> lk(mu);
      job = &j;
      generation++;
    }
    wake.notify_all();
    run_blocks(j);
    std::unique_lock<std::mutex> lk(mu);
    job = nullptr;  // late wakers find nothing
    idle.wait(lk, [&] { return j.users == 0; });
  }
};
Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may outlive static destructors
  return *p;
}

}  // namespace

cudaError_t launch(dim3 grid, dim3 block, size_t shmem, KernelBody body, void* closure) {
  const uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
  if (nthreads == 0 || nthreads > uint64_t(kMaxThreads) || block.z > 64) return cudaErrorInvalidValue;
  if (shmem > 227 * 1024) return cudaErrorInvalidValue;
  const int64_t nblocks = int64_t(grid.x) * grid.y * grid.z;
  if (nblocks == 0) return cudaSuccess;
  if (grid.y > 65535 || grid.z > 65535) return cudaErrorInvalidValue;
  if (t_fiber) trap("kernel launch from inside a kernel (dynamic parallelism) is not emulated");
  Job j;
  j.grid = grid;
  j.block = block;
  j.shmem = shmem;
  j.body = body;
  j.closure = closure;
  j.nblocks = nblocks;
  const int nt = g_threads > 0 ? g_threads : omp_get_max_threads();
  // small grids run on the calling thread alone
  if (nt > 1 && nblocks >= 2 && uint64_t(nblocks) * nthreads >= 4096)
    pool().run(j, nt - 1);
  else
    Pool::run_blocks(j);
  return j.failed.load() ? cudaErrorLaunchFailure : cudaSuccess;
}

}  // namespace ql_emu

// ---------------------------------------------------------------- runtime API on host memory
namespace {
struct EmuEvent {
  double t = 0;
};
double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
cudaError_t host_alloc(void** p, size_t bytes) {
  size_t rounded = (bytes + 255) & ~size_t(255);
  *p = aligned_alloc(256, rounded ? rounded : 256);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
}  // namespace

cudaError_t cudaMalloc(void** p, size_t bytes) { return host_alloc(p, bytes); }
cudaError_t cudaMallocManaged(void** p, size_t bytes, unsigned) { return host_alloc(p, bytes); }
cudaError_t cudaMallocHost(void** p, size_t bytes) { return host_alloc(p, bytes); }
cudaError_t cudaFree(void* p) {
  free(p);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (dst != src && bytes) memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, k);
}
cudaError_t cudaMemset(void* dst, int v, size_t bytes) {
  memset(dst, v, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int v, size_t bytes, cudaStream_t) { return cudaMemset(dst, v, bytes); }
cudaError_t cudaMemPrefetchAsync(const void*, size_t, int, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  struct sysinfo si;
  if (sysinfo(&si) != 0) return cudaErrorInvalidValue;
  if (free_bytes) *free_bytes = size_t(si.freeram) * si.mem_unit;
  if (total_bytes) *total_bytes = size_t(si.totalram) * si.mem_unit;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "cudaemu (host fibers)");
  size_t fr = 0, total = 0;
  cudaMemGetInfo(&fr, &total);
  p->totalGlobalMem = total;
  p->sharedMemPerBlock = ql_emu::kStaticShared;
  p->sharedMemPerBlockOptin = 227 * 1024;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  p->multiProcessorCount = int(cpus > 0 ? cpus : 1);
  p->major = 8;
  p->minor = 0;
  p->l2CacheSize = 1 << 20;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrComputeCapabilityMajor ? 8 : 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = reinterpret_cast<cudaStream_t>(new char[1]);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete[] reinterpret_cast<char*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = reinterpret_cast<cudaEvent_t>(new EmuEvent());
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<EmuEvent*>(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  reinterpret_cast<EmuEvent*>(e)->t = now_ms();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = float(reinterpret_cast<EmuEvent*>(b)->t - reinterpret_cast<EmuEvent*>(a)->t);
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  cudaError_t e = ql_emu::last_error();
  ql_emu::last_error() = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return ql_emu::last_error(); }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorLaunchFailure: return "unspecified launch failure (cudaemu: see stderr)";
    default: return "unknown error";
  }
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
