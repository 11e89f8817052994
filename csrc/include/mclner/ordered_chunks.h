// Deterministic parallel sums for the CPU kernels: work cut into consecutive chunks, each chunk's
// partial result built into its own buffer, the partials merged into the result in chunk order.
//
// The chunks are a function of the problem sizes only, so the result has the same bits for any thread
// count and any schedule. Threads take chunks in increasing order; a thread that finishes chunk c
// before chunk c-1 is merged parks its buffer and goes on with the next chunk instead of waiting (on a
// busy machine a descheduled thread would otherwise stall the others, as `omp ordered` does). At most
// 2·threads buffers exist, allocated on first use and reused last-freed first (so a run that never gets
// ahead touches only threads + 1); merges run one at a time, in chunk order, outside the lock.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mclner {

// compute(thread, chunk, buf) writes chunk's partial into buf (`size` elements, not zeroed);
// merge(chunk, buf) folds it into the result and is called for chunk 0, 1, 2, ... in that order.
template <class T, class Compute, class Merge>
void ordered_chunks(int64_t n_chunks, int threads, int64_t size, Compute&& compute, Merge&& merge) {
  if (n_chunks <= 0) return;
#ifndef _OPENMP
  threads = 1;
#endif
  const int n_slots = 2 * threads;
  std::vector<std::vector<T>> pool(static_cast<size_t>(n_slots));
  std::vector<int> free_slots(n_slots);  // a stack: slot 0 on top
  std::iota(free_slots.rbegin(), free_slots.rend(), 0);
  std::vector<int> parked(size_t(n_chunks), -1);  // slot holding chunk c's finished partial
  int64_t next_chunk = 0, next_merge = 0;
  bool merging = false;
  std::mutex mu;
  std::condition_variable slot_freed;
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    for (;;) {
      int slot;
      int64_t c;
      {
        std::unique_lock<std::mutex> lk(mu);
        // The slot is taken before the chunk: the lowest unmerged chunk is then always held by a
        // thread that can finish it, so waiting here never deadlocks.
        slot_freed.wait(lk, [&] { return !free_slots.empty() || next_chunk >= n_chunks; });
        if (next_chunk >= n_chunks) break;
        slot = free_slots.back();
        free_slots.pop_back();
        c = next_chunk++;
      }
      std::vector<T>& buf = pool[size_t(slot)];  // owned by this thread until merged
      if (buf.size() != size_t(size)) buf.resize(size_t(size));
      compute(tid, c, buf.data());
      std::unique_lock<std::mutex> lk(mu);
      parked[size_t(c)] = slot;
      if (merging) continue;  // the merging thread will reach chunk c (it re-checks under the lock)
      merging = true;
      while (next_merge < n_chunks && parked[size_t(next_merge)] >= 0) {
        const int s = parked[size_t(next_merge)];
        lk.unlock();
        merge(next_merge, static_cast<const T*>(pool[size_t(s)].data()));
        lk.lock();
        free_slots.push_back(s);
        ++next_merge;
        slot_freed.notify_all();
      }
      merging = false;
    }
  }
}

}  // namespace mclner
