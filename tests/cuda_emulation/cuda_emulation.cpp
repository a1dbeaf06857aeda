// The CUDA emulation's runtime (see cuda_emulation.h): fibers, barriers, warp exchanges, schedules.
//
// Fibers start on their own stacks through makecontext and then switch with _setjmp/_longjmp,
// which, unlike swapcontext, makes no system call per switch: a kernel with a barrier per state
// switches hundreds of thousands of times per block. Build with -U_FORTIFY_SOURCE: glibc's
// checked longjmp refuses to jump between stacks.
#include "cuda_emulation.h"

#include <csetjmp>
#include <cstdio>
#include <random>
#include <string>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>
#include <vector>

// The kernel-facing index macros are for kernels, not for the runtime that defines them.
#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim

namespace cuda_emu
{
namespace
{

constexpr int kWarp = 32;
constexpr size_t kStackBytes = 128 * 1024;

enum class State
{
    kRunnable,
    kBlockBarrier,
    kWarpBarrier,
    kDone,
};

// What a warp barrier phase is for; every lane of the mask must arrive for the same one.
enum Tag : int
{
    kNoTag = 0,
    kSyncWarp = 1,
    kExchangeRead = 2,
    kExchangePost = 10, // + the shuffle kind
};

struct Fiber
{
    uint3 index{};
    int linear = 0;
    int warp = 0;
    int lane = 0;
    State state = State::kRunnable;
    bool started = false;
    jmp_buf context;
    ucontext_t start;
    char* stack = nullptr;
};

struct WarpState
{
    unsigned members = 0; // lanes that exist (a partial last warp has fewer)
    unsigned arrived = 0; // lanes at the phase in progress
    unsigned mask = 0;
    int tag = kNoTag;
    int width = kWarp;
    uint64_t values[kWarp]{};
};

struct Emulator
{
    int schedule = kInOrder;
    int laggingWarp = -1;
    std::mt19937_64 random{0};

    std::vector<Fiber> fibers;
    std::vector<WarpState> warps;
    std::vector<char*> stacks;
    uint3 blockIndex{};
    dim3 blockShape;
    dim3 gridShape;
    int live = 0;
    int atBarrier = 0;
    Fiber* current = nullptr;
    jmp_buf scheduler;
    std::function<void()> const* body = nullptr;
    std::string failure;
    bool launching = false;

    cudaError_t lastError = cudaSuccess;
    std::string message;
    unsigned long long counters[4] = {}; // launches, blocks, block barriers, lane exchanges
};

Emulator emu;

char* newStack()
{
    long const page = sysconf(_SC_PAGESIZE);
    void* memory = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
    {
        return nullptr;
    }
    mprotect(memory, page, PROT_NONE); // a stack overflow faults instead of writing over a neighbour
    return static_cast<char*>(memory) + page;
}

std::string where(Fiber const& f)
{
    return "thread (" + std::to_string(f.index.x) + "," + std::to_string(f.index.y) + "," + std::to_string(f.index.z)
        + ")";
}

[[noreturn]] void fail(std::string const& why)
{
    if (emu.failure.empty())
    {
        emu.failure = why;
    }
    _longjmp(emu.scheduler, 1);
}

void yieldToScheduler()
{
    if (_setjmp(emu.current->context) == 0)
    {
        _longjmp(emu.scheduler, 1);
    }
}

void fiberEntry()
{
    (*emu.body)();
    Fiber& self = *emu.current;
    self.state = State::kDone;
    --emu.live;
    WarpState const& warp = emu.warps[self.warp];
    if (emu.atBarrier > 0)
    {
        fail(where(self) + " exited while " + std::to_string(emu.atBarrier)
            + " thread(s) wait at __syncthreads (a barrier not reached by the whole block)");
    }
    if (warp.arrived != 0 && (warp.mask >> self.lane & 1U) != 0)
    {
        fail(where(self) + " exited while lanes of its warp wait for it in a warp exchange");
    }
    _longjmp(emu.scheduler, 1);
}

bool runnable(int i)
{
    return emu.fibers[i].state == State::kRunnable;
}

int pick()
{
    int const count = static_cast<int>(emu.fibers.size());
    switch (emu.schedule)
    {
    case kReverse:
        for (int i = count - 1; i >= 0; --i)
        {
            if (runnable(i))
            {
                return i;
            }
        }
        return -1;
    case kRandom:
    {
        std::vector<int> ready;
        for (int i = 0; i < count; ++i)
        {
            if (runnable(i))
            {
                ready.push_back(i);
            }
        }
        if (ready.empty())
        {
            return -1;
        }
        return ready[std::uniform_int_distribution<size_t>(0, ready.size() - 1)(emu.random)];
    }
    case kLaggingWarp:
    {
        int const warps = static_cast<int>(emu.warps.size());
        int const held = emu.laggingWarp < 0 ? warps - 1 : emu.laggingWarp % warps;
        int fallback = -1;
        for (int i = 0; i < count; ++i)
        {
            if (runnable(i))
            {
                if (emu.fibers[i].warp != held)
                {
                    return i;
                }
                if (fallback < 0)
                {
                    fallback = i;
                }
            }
        }
        return fallback;
    }
    default:
        for (int i = 0; i < count; ++i)
        {
            if (runnable(i))
            {
                return i;
            }
        }
        return -1;
    }
}

std::string deadlock()
{
    std::string text = "deadlock: no thread can run (" + std::to_string(emu.atBarrier) + " at __syncthreads";
    for (size_t w = 0; w < emu.warps.size(); ++w)
    {
        if (emu.warps[w].arrived != 0)
        {
            char buffer[96];
            std::snprintf(buffer, sizeof(buffer), "; warp %zu: lanes 0x%08x of mask 0x%08x in an exchange", w,
                emu.warps[w].arrived, emu.warps[w].mask);
            text += buffer;
        }
    }
    return text + ")";
}

// Runs one block to completion; false with emu.failure set when it breaks CUDA's rules.
bool runBlock()
{
    for (size_t i = 0; i < emu.fibers.size(); ++i)
    {
        Fiber& f = emu.fibers[i];
        f.state = State::kRunnable;
        f.started = false;
        getcontext(&f.start);
        f.start.uc_stack.ss_sp = f.stack;
        f.start.uc_stack.ss_size = kStackBytes;
        f.start.uc_link = nullptr;
        makecontext(&f.start, fiberEntry, 0);
    }
    for (WarpState& w : emu.warps)
    {
        w.arrived = 0;
        w.tag = kNoTag;
    }
    emu.live = static_cast<int>(emu.fibers.size());
    emu.atBarrier = 0;
    while (emu.live > 0)
    {
        int const next = pick();
        if (next < 0)
        {
            emu.failure = deadlock();
            return false;
        }
        emu.current = &emu.fibers[next];
        if (_setjmp(emu.scheduler) == 0)
        {
            if (!emu.current->started)
            {
                emu.current->started = true;
                setcontext(&emu.current->start);
            }
            _longjmp(emu.current->context, 1);
        }
        emu.current = nullptr;
        if (!emu.failure.empty())
        {
            return false;
        }
    }
    return true;
}

void warpArrive(unsigned mask, int tag)
{
    Fiber& self = *emu.current;
    WarpState& w = emu.warps[self.warp];
    unsigned const bit = 1U << self.lane;
    if ((mask & bit) == 0)
    {
        fail(where(self) + " calls a warp-synchronous function with a mask that leaves out its own lane");
    }
    if ((mask & ~w.members) != 0)
    {
        fail(where(self) + " names lanes that do not exist in its warp's mask");
    }
    if (w.arrived == 0)
    {
        w.mask = mask;
        w.tag = tag;
    }
    else if (w.mask != mask || w.tag != tag)
    {
        fail(where(self) + " reaches a different warp-synchronous call (or mask) than the other lanes of warp "
            + std::to_string(self.warp));
    }
    w.arrived |= bit;
    self.state = State::kWarpBarrier;
    if (w.arrived == mask)
    {
        for (int lane = 0; lane < kWarp; ++lane)
        {
            if ((mask >> lane & 1U) != 0)
            {
                emu.fibers[self.warp * kWarp + lane].state = State::kRunnable;
            }
        }
        w.arrived = 0;
    }
    yieldToScheduler();
}

} // namespace

uint3 const& threadIndex()
{
    return emu.current->index;
}

uint3 const& blockIndex()
{
    return emu.blockIndex;
}

dim3 const& blockDimension()
{
    return emu.blockShape;
}

dim3 const& gridDimension()
{
    return emu.gridShape;
}

void syncThreads()
{
    Fiber& self = *emu.current;
    self.state = State::kBlockBarrier;
    if (++emu.atBarrier == emu.live)
    {
        for (Fiber& f : emu.fibers)
        {
            if (f.state == State::kBlockBarrier)
            {
                f.state = State::kRunnable;
            }
        }
        emu.atBarrier = 0;
        ++emu.counters[2];
    }
    yieldToScheduler();
}

void syncWarp(unsigned mask)
{
    warpArrive(mask, kSyncWarp);
}

uint64_t shuffle(int kind, unsigned mask, uint64_t bits, int argument, int width)
{
    Fiber& self = *emu.current;
    if (width <= 0 || width > kWarp || (width & (width - 1)) != 0)
    {
        fail(where(self) + " shuffles with width " + std::to_string(width) + " (a power of 2 up to 32)");
    }
    WarpState& w = emu.warps[self.warp];
    w.values[self.lane] = bits;
    w.width = width;
    warpArrive(mask, kExchangePost + kind); // every lane of the mask has posted its value
    int const lane = self.lane;
    int const segment = lane & ~(width - 1);
    int source = lane;
    switch (kind)
    {
    case 0: source = lane - argument >= segment ? lane - argument : lane; break;
    case 1: source = lane + argument < segment + width ? lane + argument : lane; break;
    case 2: source = ((lane ^ argument) & ~(width - 1)) == segment ? lane ^ argument : lane; break;
    default: source = segment + (argument % width + width) % width; break;
    }
    if ((mask >> source & 1U) == 0)
    {
        fail(where(self) + " reads lane " + std::to_string(source) + ", which is not in the exchange's mask");
    }
    uint64_t const result = w.values[source];
    ++emu.counters[3];
    warpArrive(mask, kExchangeRead); // every lane has read before any value is overwritten
    return result;
}

cudaError_t launchBlocks(dim3 grid, dim3 block, size_t dynamicShared, std::function<void()> const& body)
{
    ++emu.counters[0];
    auto refuse = [](cudaError_t error, std::string const& why) {
        emu.lastError = error;
        emu.message = why;
        return error;
    };
    unsigned long long const threads = static_cast<unsigned long long>(block.x) * block.y * block.z;
    if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64
        || threads > 1024)
    {
        return refuse(cudaErrorInvalidConfiguration, "block of " + std::to_string(block.x) + "x"
                + std::to_string(block.y) + "x" + std::to_string(block.z) + " threads (at most 1024)");
    }
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647U || grid.y > 65535 || grid.z > 65535)
    {
        return refuse(cudaErrorInvalidConfiguration, "grid of " + std::to_string(grid.x) + "x"
                + std::to_string(grid.y) + "x" + std::to_string(grid.z) + " blocks (y and z at most 65535)");
    }
    if (dynamicShared > 48 * 1024)
    {
        return refuse(cudaErrorInvalidValue, "more than 48 KiB of dynamic shared memory without opting in");
    }
    if (emu.launching)
    {
        return refuse(cudaErrorNotSupported, "a launch from inside a kernel (not emulated)");
    }
    while (emu.stacks.size() < threads)
    {
        char* stack = newStack();
        if (stack == nullptr)
        {
            return refuse(cudaErrorMemoryAllocation, "no memory for the emulated threads' stacks");
        }
        emu.stacks.push_back(stack);
    }
    emu.fibers.assign(threads, Fiber{});
    emu.warps.assign((threads + kWarp - 1) / kWarp, WarpState{});
    for (unsigned i = 0; i < threads; ++i)
    {
        Fiber& f = emu.fibers[i];
        f.linear = static_cast<int>(i);
        f.index = uint3{i % block.x, (i / block.x) % block.y, static_cast<unsigned>(i / (block.x * block.y))};
        f.warp = static_cast<int>(i) / kWarp;
        f.lane = static_cast<int>(i) % kWarp;
        f.stack = emu.stacks[i];
        emu.warps[f.warp].members |= 1U << f.lane;
    }
    emu.blockShape = block;
    emu.gridShape = grid;
    emu.body = &body;
    emu.launching = true;
    for (unsigned z = 0; z < grid.z; ++z)
    {
        for (unsigned y = 0; y < grid.y; ++y)
        {
            for (unsigned x = 0; x < grid.x; ++x)
            {
                emu.blockIndex = uint3{x, y, z};
                ++emu.counters[1];
                if (!runBlock())
                {
                    emu.launching = false;
                    std::string const why = emu.failure + " in block (" + std::to_string(x) + ","
                        + std::to_string(y) + "," + std::to_string(z) + ")";
                    emu.failure.clear();
                    std::fprintf(stderr, "cuda emulation: %s\n", why.c_str());
                    return refuse(cudaErrorLaunchFailure, why);
                }
            }
        }
    }
    emu.launching = false;
    return cudaSuccess;
}

} // namespace cuda_emu

extern "C"
{
    cudaError_t CUDARTAPI cudaGetLastError(void)
    {
        cudaError_t const error = cuda_emu::emu.lastError;
        cuda_emu::emu.lastError = cudaSuccess;
        return error;
    }

    void cuda_emu_configure(int schedule, int laggingWarp, unsigned long long seed)
    {
        cuda_emu::emu.schedule = schedule;
        cuda_emu::emu.laggingWarp = laggingWarp;
        cuda_emu::emu.random.seed(seed);
    }

    char const* cuda_emu_last_message()
    {
        return cuda_emu::emu.message.c_str();
    }

    void cuda_emu_counters(unsigned long long* values)
    {
        for (int i = 0; i < 4; ++i)
        {
            values[i] = cuda_emu::emu.counters[i];
        }
    }

    void cuda_emu_reset_counters()
    {
        for (unsigned long long& counter : cuda_emu::emu.counters)
        {
            counter = 0;
        }
        cuda_emu::emu.message.clear();
    }
}
