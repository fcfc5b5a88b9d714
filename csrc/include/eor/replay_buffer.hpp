// A fixed-capacity FIFO replay buffer of (obs, act, rew, next_obs, done) float32 transitions.
//
// Header-only, no Python, no libtorch. The Python module eor._core (csrc/bindings.cpp) wraps it;
// C++ users pull it in with the CMake target eor::buffer.
//
// Layout: one transition is one contiguous row of width W = 2*obs_dim + act_dim + 2 floats,
//   [ obs (obs_dim) | act (act_dim) | rew (1) | next_obs (obs_dim) | done (1) ],
// so a sampled transition is a single block (HalfCheetah: 42 floats, 168 bytes). Each slot is
// padded to a cache-friendly stride (HalfCheetah: 48 floats, 192 bytes; see padded_stride).
// Rows live in slots 0..capacity-1; slot `position()` is written next and the oldest row is
// overwritten once the buffer is full. While not full, slots [0, size) are exactly the stored
// rows, so "index" below always means a slot in [0, size).
//
// Memory is reserved with mmap (calloc off Linux), which the OS backs lazily: a 10M-transition
// HalfCheetah buffer reserves 1.9 GB of address space but commits only the pages written to.
//
// Thread safety. The shape (capacity, obs_dim, act_dim, row width and stride), the seed and the
// storage are fixed when a buffer is built (load() builds a new one; nothing reallocates or
// reshapes a live buffer), so their accessors, and add()'s reads of the capacity and dims, take no
// lock. add()'s NaN/inf check reads only the caller's rows and runs before the lock. Every read or
// write of the rows, size, position or generator takes the buffer's mutex: add(), sample(),
// sample_obs(), sample_indices(), gather(), clear(), size(), position(), rng_state(),
// set_rng_state() and save(); so add() from one thread and sample() from another never see a
// half-written row. Not covered: data() hands out the raw storage without the lock (reading it
// while another thread adds is a data race); the *_locked methods expect the caller to hold
// lock(); the caller's input and output arrays are the caller's to guard. sample_mixed locks one
// buffer at a time, so its parts are not one snapshot across buffers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "eor/random.hpp"

namespace eor {

/// Input rows, one pointer per field, each C-contiguous: obs [n, obs_dim], act [n, act_dim],
/// rew [n], next_obs [n, obs_dim], done [n].
struct TransitionsView {
  const float* obs;
  const float* act;
  const float* rew;
  const float* next_obs;
  const float* done;
  std::size_t n;
};

/// Output rows, one pointer per field, each C-contiguous with room for the batch. A null pointer
/// skips that field.
struct BatchView {
  float* obs;
  float* act;
  float* rew;
  float* next_obs;
  float* done;

  /// The same fields advanced by `rows` rows (for writing one segment of a mixed batch).
  BatchView offset(std::size_t rows, std::size_t obs_dim, std::size_t act_dim) const {
    auto adv = [rows](float* p, std::size_t width) { return p ? p + rows * width : p; };
    return {adv(obs, obs_dim), adv(act, act_dim), adv(rew, 1), adv(next_obs, obs_dim),
            adv(done, 1)};
  }
};

/// Error in a buffer file: wrong magic or version, truncated, corrupt (checksum), unreadable.
class BufferFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// Zero-initialised float storage committed lazily by the OS. On Linux: an anonymous mmap,
/// 2 MB aligned and advised to use transparent huge pages. Sampling reads random rows of a
/// buffer far larger than the caches, so nearly every row costs a TLB miss with 4 KB pages;
/// 2 MB pages remove most of them (numpy does the same for its large arrays).
class Storage {
 public:
  Storage() = default;
  explicit Storage(std::size_t floats) : bytes_(floats * sizeof(float)) {
    if (bytes_ == 0) return;
#if defined(__linux__)
    constexpr std::size_t kHuge = std::size_t{2} << 20;
    map_bytes_ = bytes_ + kHuge;
    void* m =
        ::mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    map_ = m;
    const auto addr = reinterpret_cast<std::uintptr_t>(m);
    const std::uintptr_t aligned = (addr + kHuge - 1) & ~static_cast<std::uintptr_t>(kHuge - 1);
    data_ = reinterpret_cast<float*>(aligned);
    ::madvise(data_, bytes_, MADV_HUGEPAGE);  // advisory: ignored where THP is unavailable
#else
    data_ = static_cast<float*>(std::calloc(floats, sizeof(float)));
    if (data_ == nullptr) throw std::bad_alloc();
#endif
  }
  Storage(Storage&& other) noexcept { swap(other); }
  Storage& operator=(Storage&& other) noexcept {
    Storage tmp(std::move(other));
    swap(tmp);
    return *this;
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
#if defined(__linux__)
    if (map_ != nullptr) ::munmap(map_, map_bytes_);
#else
    std::free(data_);
#endif
  }
  float* get() const { return data_; }

 private:
  void swap(Storage& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(bytes_, o.bytes_);
    std::swap(map_, o.map_);
    std::swap(map_bytes_, o.map_bytes_);
  }
  float* data_ = nullptr;
  std::size_t bytes_ = 0;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
};

/// Whether p[0, n) holds a non-finite value (NaN or +-inf: exponent bits all ones). Branch-free on
/// the float bits so that the compiler vectorises it; std::isfinite per element was the larger
/// part of add()'s time.
inline bool any_nonfinite(const float* p, std::size_t n) {
  std::uint32_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t u;
    std::memcpy(&u, p + i, sizeof(u));
    bad |= static_cast<std::uint32_t>((u & 0x7F800000u) == 0x7F800000u);
  }
  return bad != 0;
}

inline bool row_finite(const TransitionsView& t, std::size_t r, std::size_t s, std::size_t a) {
  return !(any_nonfinite(t.obs + r * s, s) || any_nonfinite(t.act + r * a, a) ||
           any_nonfinite(t.rew + r, 1) || any_nonfinite(t.next_obs + r * s, s) ||
           any_nonfinite(t.done + r, 1));
}

/// dst[0, n) = src[0, n) for short runs (a field of one row): 16-byte moves, the last one
/// overlapping, instead of a library memcpy call per field (~30% of a cached gather's time).
inline void copy_floats(float* dst, const float* src, std::size_t n) {
  if (n >= 4) {
    std::size_t j = 0;
    for (; j + 4 <= n; j += 4) std::memcpy(dst + j, src + j, 16);
    if (j < n) std::memcpy(dst + n - 4, src + n - 4, 16);
  } else {
    for (std::size_t j = 0; j < n; ++j) dst[j] = src[j];
  }
}

inline void prefetch(const void* p) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, 0, 1);  // locality 1 measured fastest here (AMD EPYC): ~35% over 0
#else
  (void)p;
#endif
}

/// 64-bit FNV-1a over 32-bit words, then a final avalanche. Every buffer file section is a
/// multiple of 4 bytes. Any single changed word changes the hash (each step is a bijection).
class Hasher {
 public:
  void update(const void* data, std::size_t bytes) {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i + 4 <= bytes; i += 4) {
      std::uint32_t w;
      std::memcpy(&w, p + i, 4);
      h_ = (h_ ^ w) * 0x100000001B3ULL;
    }
  }
  std::uint64_t digest() const {
    std::uint64_t z = h_;
    z = (z ^ (z >> 33)) * 0xFF51AFD7ED558CCDULL;
    z = (z ^ (z >> 33)) * 0xC4CEB9FE1A85EC53ULL;
    return z ^ (z >> 33);
  }

 private:
  std::uint64_t h_ = 0xCBF29CE484222325ULL;
};

inline bool little_endian() {
  const std::uint32_t one = 1;
  unsigned char first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

inline void put_u64(unsigned char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline std::uint64_t get_u64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

}  // namespace detail

class ReplayBuffer {
 public:
  /// File format (little-endian): a 120-byte header, then `size` rows of W float32.
  ///   0  magic "\x89EORBUF\n"      8  version u32, float size u32 (4)
  ///  16  capacity, obs_dim, act_dim, size, position, seed, rng state[4]   (10 x u64)
  ///  96  payload bytes u64, payload checksum u64                  112  header checksum u64
  static constexpr std::uint32_t kFileVersion = 1;
  static constexpr std::size_t kHeaderBytes = 120;
  static constexpr std::size_t kChunkRows = 4096;  // rows per read/write in save and load
  static constexpr char kMagic[9] =
      "\x89"
      "EORBUF\n";

  ReplayBuffer(std::size_t capacity, std::size_t obs_dim, std::size_t act_dim,
               std::uint64_t seed = 0)
      : capacity_(at_least_one(capacity, "capacity")),
        obs_dim_(at_least_one(obs_dim, "obs_dim")),
        act_dim_(act_dim),
        width_(2 * obs_dim_ + act_dim_ + 2),
        stride_(padded_stride(width_)),
        seed_(seed),
        data_(allocate_rows(capacity_, stride_)),
        rng_(seed) {}

  ReplayBuffer(const ReplayBuffer&) = delete;
  ReplayBuffer& operator=(const ReplayBuffer&) = delete;

  std::size_t capacity() const { return capacity_; }
  std::size_t obs_dim() const { return obs_dim_; }
  std::size_t act_dim() const { return act_dim_; }
  /// Floats per stored row: 2*obs_dim + act_dim + 2.
  std::size_t row_width() const { return width_; }
  /// Floats from one slot to the next in data(): row_width() rounded up to a cache-friendly
  /// size (see padded_stride); the padding floats are zero.
  std::size_t row_stride() const { return stride_; }
  std::uint64_t seed() const { return seed_; }
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return size_;
  }
  /// The slot the next added row goes to.
  std::size_t position() const {
    std::lock_guard<std::mutex> lock(mu_);
    return pos_;
  }
  /// Raw storage, capacity x row_stride floats; only slots [0, size) hold data. Reading it while
  /// another thread adds is a data race: use it for statistics when no add is running.
  const float* data() const { return data_.get(); }

  /// Appends t.n rows (FIFO: the oldest are overwritten when full) and returns how many were
  /// stored. A row with a NaN or inf in any field throws std::invalid_argument, naming the
  /// count, unless drop_nonfinite, in which case such rows are skipped.
  std::size_t add(const TransitionsView& t, bool drop_nonfinite = false) {
    std::vector<unsigned char> keep;  // only filled when some row is non-finite
    std::size_t bad = 0;
    // Fast path: one vectorised pass per field; rows are examined only if something is wrong.
    const std::size_t s = obs_dim_, a = act_dim_;
    const bool any_bad =
        detail::any_nonfinite(t.obs, t.n * s) || detail::any_nonfinite(t.act, t.n * a) ||
        detail::any_nonfinite(t.rew, t.n) || detail::any_nonfinite(t.next_obs, t.n * s) ||
        detail::any_nonfinite(t.done, t.n);
    for (std::size_t r = 0; any_bad && r < t.n; ++r) {
      if (!detail::row_finite(t, r, s, a)) {
        if (keep.empty()) keep.assign(t.n, 1);
        keep[r] = 0;
        ++bad;
      }
    }
    if (bad > 0 && !drop_nonfinite) {
      throw std::invalid_argument("add: " + std::to_string(bad) + " of " + std::to_string(t.n) +
                                  " rows contain NaN or inf; pass drop_nonfinite=True to drop "
                                  "them instead");
    }
    const std::size_t kept = t.n - bad;
    // Rows that would be overwritten within this same call are not written at all.
    const std::size_t skip = kept > capacity_ ? kept - capacity_ : 0;
    std::lock_guard<std::mutex> lock(mu_);
    std::size_t seen = 0;
    for (std::size_t r = 0; r < t.n; ++r) {
      if (!keep.empty() && !keep[r]) continue;
      if (seen++ >= skip) write_row(pos_, t, r);
      pos_ = pos_ + 1 == capacity_ ? 0 : pos_ + 1;
    }
    size_ = kept >= capacity_ - size_ ? capacity_ : size_ + kept;
    return kept;
  }

  /// Draws k indices into `out`: distinct (in uniformly random order) unless `replace`.
  void sample_indices(std::size_t k, bool replace, std::int64_t* out) {
    std::lock_guard<std::mutex> lock(mu_);
    draw_locked(k, replace, out, "sample");
  }

  /// Draws k transitions uniformly (distinct unless `replace`) and writes them to `out`.
  void sample(std::size_t k, bool replace, const BatchView& out) {
    std::lock_guard<std::mutex> lock(mu_);
    sample_locked(k, replace, out, "sample");
  }

  /// Draws n observations (distinct rows unless `replace`) into out [n, obs_dim]: rollout starts.
  void sample_obs(std::size_t n, bool replace, float* out) {
    BatchView view{out, nullptr, nullptr, nullptr, nullptr};
    std::lock_guard<std::mutex> lock(mu_);
    sample_locked(n, replace, view, "sample_obs");
  }

  /// Copies the rows at the given slot indices (each in [0, size)) to `out`.
  void gather(const std::int64_t* idx, std::size_t k, const BatchView& out) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (std::size_t i = 0; i < k; ++i) {
      if (idx[i] < 0 || static_cast<std::size_t>(idx[i]) >= size_) {
        throw std::out_of_range("gather: index " + std::to_string(idx[i]) + " at position " +
                                std::to_string(i) + " is outside [0, " + std::to_string(size_) +
                                ")");
      }
    }
    gather_locked(idx, k, out);
  }

  /// Empties the buffer (keeps its memory, its capacity and its generator).
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    size_ = 0;
    pos_ = 0;
  }

  Xoshiro256::State rng_state() const {
    std::lock_guard<std::mutex> lock(mu_);
    return rng_.state();
  }
  void set_rng_state(const Xoshiro256::State& s) {
    std::lock_guard<std::mutex> lock(mu_);
    rng_.set_state(s);
  }

  /// Writes contents, position, size, seed and generator state. Writes `path + ".tmp"` first and
  /// renames it, so an interrupted save never leaves a half-written file under `path`.
  void save(const std::string& path) const {
    require_little_endian();
    std::lock_guard<std::mutex> lock(mu_);
    const std::uint64_t payload = static_cast<std::uint64_t>(size_) * width_ * sizeof(float);
    const std::string tmp = path + ".tmp";
    {
      detail::FilePtr f(std::fopen(tmp.c_str(), "wb"));
      if (!f) throw BufferFileError("save: cannot open " + tmp + " for writing");
      // Rows are written packed (without the slot padding), the header last, once the payload
      // checksum is known.
      unsigned char header[kHeaderBytes] = {};
      bool ok = std::fwrite(header, 1, kHeaderBytes, f.get()) == kHeaderBytes;
      detail::Hasher payload_hash;
      std::vector<float> pack;
      for (std::size_t lo = 0; ok && lo < size_; lo += kChunkRows) {
        const std::size_t n = std::min(kChunkRows, size_ - lo);
        pack.resize(n * width_);
        for (std::size_t r = 0; r < n; ++r) {
          std::memcpy(pack.data() + r * width_, data_.get() + (lo + r) * stride_,
                      width_ * sizeof(float));
        }
        payload_hash.update(pack.data(), pack.size() * sizeof(float));
        ok = std::fwrite(pack.data(), sizeof(float), pack.size(), f.get()) == pack.size();
      }
      fill_header(header, payload, payload_hash.digest());
      ok = ok && std::fseek(f.get(), 0, SEEK_SET) == 0 &&
           std::fwrite(header, 1, kHeaderBytes, f.get()) == kHeaderBytes;
      ok = (std::fflush(f.get()) == 0) && ok;
      if (!ok) {
        f.reset();
        std::remove(tmp.c_str());
        throw BufferFileError("save: writing " + tmp + " failed (disk full?)");
      }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      throw BufferFileError("save: cannot rename " + tmp + " to " + path);
    }
  }

  /// Reads a file written by save(). Every header field and both checksums are verified before
  /// anything is used; a truncated, corrupt or foreign file throws BufferFileError.
  /// The result is a new buffer: no live buffer is ever reshaped or has its storage replaced.
  static std::unique_ptr<ReplayBuffer> load(const std::string& path) {
    require_little_endian();
    const std::string where = "load " + path + ": ";
    detail::FilePtr f(std::fopen(path.c_str(), "rb"));
    if (!f) throw BufferFileError(where + "cannot open the file");
    if (std::fseek(f.get(), 0, SEEK_END) != 0) throw BufferFileError(where + "cannot seek");
    const long file_size_l = std::ftell(f.get());
    if (file_size_l < 0) throw BufferFileError(where + "cannot tell the file size");
    const std::uint64_t file_size = static_cast<std::uint64_t>(file_size_l);
    std::rewind(f.get());

    unsigned char header[kHeaderBytes];
    if (file_size < kHeaderBytes || std::fread(header, 1, kHeaderBytes, f.get()) != kHeaderBytes) {
      throw BufferFileError(where + "truncated: " + std::to_string(file_size) +
                            " bytes, shorter than the " + std::to_string(kHeaderBytes) +
                            "-byte header");
    }
    if (std::memcmp(header, kMagic, 8) != 0) {
      throw BufferFileError(where + "not an eor replay buffer file (bad magic bytes)");
    }
    std::uint32_t version = 0, float_size = 0;
    for (int i = 0; i < 4; ++i) {
      version |= static_cast<std::uint32_t>(header[8 + i]) << (8 * i);
      float_size |= static_cast<std::uint32_t>(header[12 + i]) << (8 * i);
    }
    if (version != kFileVersion) {
      throw BufferFileError(where + "file format version " + std::to_string(version) +
                            " is not supported (this build reads version " +
                            std::to_string(kFileVersion) + ")");
    }
    detail::Hasher header_hash;
    header_hash.update(header, 112);
    if (header_hash.digest() != detail::get_u64(header + 112)) {
      throw BufferFileError(where + "header checksum mismatch: the file is corrupt");
    }
    std::uint64_t v[10];
    for (int i = 0; i < 10; ++i) v[i] = detail::get_u64(header + 16 + 8 * i);
    const std::uint64_t capacity = v[0], obs_dim = v[1], act_dim = v[2], size = v[3], pos = v[4];
    const std::uint64_t payload = detail::get_u64(header + 96);
    const std::uint64_t width = 2 * obs_dim + act_dim + 2;
    const bool consistent = float_size == sizeof(float) && capacity >= 1 && obs_dim >= 1 &&
                            obs_dim < (1ULL << 32) && act_dim < (1ULL << 32) && size <= capacity &&
                            pos < capacity && (size == capacity || pos == size) &&
                            payload == size * width * sizeof(float);
    if (!consistent) throw BufferFileError(where + "inconsistent header fields: corrupt file");
    if (file_size != kHeaderBytes + payload) {
      throw BufferFileError(
          where + (file_size < kHeaderBytes + payload ? "truncated" : "too long") + ": expected " +
          std::to_string(kHeaderBytes + payload) + " bytes, found " + std::to_string(file_size));
    }
    Xoshiro256 rng;
    rng.set_state({v[6], v[7], v[8], v[9]});

    // No other thread can see `buf` before it is returned: its fields are set without the lock.
    auto buf = std::make_unique<ReplayBuffer>(static_cast<std::size_t>(capacity),
                                              static_cast<std::size_t>(obs_dim),
                                              static_cast<std::size_t>(act_dim), v[5]);
    const std::size_t w = buf->width_, stride = buf->stride_, rows = static_cast<std::size_t>(size);
    float* data = buf->data_.get();
    detail::Hasher payload_hash;
    std::vector<float> pack;
    for (std::size_t lo = 0; lo < rows; lo += kChunkRows) {
      const std::size_t n = std::min(kChunkRows, rows - lo);
      pack.resize(n * w);
      if (std::fread(pack.data(), sizeof(float), pack.size(), f.get()) != pack.size()) {
        throw BufferFileError(where + "read failed (truncated while reading?)");
      }
      payload_hash.update(pack.data(), pack.size() * sizeof(float));
      for (std::size_t r = 0; r < n; ++r) {
        std::memcpy(data + (lo + r) * stride, pack.data() + r * w, w * sizeof(float));
      }
    }
    if (payload_hash.digest() != detail::get_u64(header + 104)) {
      throw BufferFileError(where + "data checksum mismatch: the file is corrupt");
    }
    buf->size_ = rows;
    buf->pos_ = static_cast<std::size_t>(pos);
    buf->rng_ = rng;
    return buf;
  }

  // ---- for sample_mixed: callers lock with lock() and use the *_locked methods.
  std::unique_lock<std::mutex> lock() const { return std::unique_lock<std::mutex>(mu_); }
  std::size_t size_locked() const { return size_; }

  void sample_locked(std::size_t k, bool replace, const BatchView& out, const char* what) {
    if (k == 0) return;
    scratch_.resize(k);
    draw_locked(k, replace, scratch_.data(), what);
    gather_locked(scratch_.data(), k, out);
  }

 private:
  static std::size_t at_least_one(std::size_t n, const char* name) {
    if (n == 0) throw std::invalid_argument(std::string(name) + " must be >= 1, got 0");
    return n;
  }

  /// Floats per slot. A row that starts mid cache line touches one line more than it needs
  /// (HalfCheetah: 168-byte rows touch 3.5 lines on average); padding the slot to 64 bytes (or
  /// to a divisor of 64) makes it 3, which made random gathers ~25% faster. Padding is used
  /// only when it costs at most 20% more memory (42 -> 48 floats: +14%).
  static std::size_t padded_stride(std::size_t width) {
    std::size_t padded = 16;
    while (padded / 2 >= width && padded > 1) padded /= 2;  // rows below a line: a divisor of 16
    if (width > 16) padded = (width + 15) / 16 * 16;
    return padded * 5 <= width * 6 ? padded : width;
  }

  void fill_header(unsigned char* header, std::uint64_t payload, std::uint64_t checksum) const {
    std::memcpy(header, kMagic, 8);
    const std::uint32_t version = kFileVersion, float_size = sizeof(float);
    for (int i = 0; i < 4; ++i) {
      header[8 + i] = static_cast<unsigned char>(version >> (8 * i));
      header[12 + i] = static_cast<unsigned char>(float_size >> (8 * i));
    }
    const std::uint64_t fields[10] = {
        capacity_, obs_dim_,        act_dim_,        size_,           pos_,
        seed_,     rng_.state()[0], rng_.state()[1], rng_.state()[2], rng_.state()[3]};
    for (int i = 0; i < 10; ++i) detail::put_u64(header + 16 + 8 * i, fields[i]);
    detail::put_u64(header + 96, payload);
    detail::put_u64(header + 104, checksum);
    detail::Hasher header_hash;
    header_hash.update(header, 112);
    detail::put_u64(header + 112, header_hash.digest());
  }

  static detail::Storage allocate_rows(std::size_t rows, std::size_t width) {
    if (width != 0 && rows > static_cast<std::size_t>(-1) / sizeof(float) / width) {
      throw std::invalid_argument("capacity x row width overflows the address space");
    }
    return detail::Storage(rows * width);
  }

  static void require_little_endian() {
    if (!detail::little_endian()) {
      throw BufferFileError("buffer files are little-endian; this big-endian host is unsupported");
    }
  }

  void write_row(std::size_t slot, const TransitionsView& t, std::size_t r) {
    float* dst = data_.get() + slot * stride_;
    const std::size_t s = obs_dim_, a = act_dim_;
    std::memcpy(dst, t.obs + r * s, s * sizeof(float));
    std::memcpy(dst + s, t.act + r * a, a * sizeof(float));
    dst[s + a] = t.rew[r];
    std::memcpy(dst + s + a + 1, t.next_obs + r * s, s * sizeof(float));
    dst[2 * s + a + 1] = t.done[r];
  }

  void draw_locked(std::size_t k, bool replace, std::int64_t* out, const char* what) {
    if (k == 0) return;
    if (size_ == 0) {
      throw std::invalid_argument(std::string(what) + ": the buffer is empty (add transitions " +
                                  "before sampling)");
    }
    // Each row is prefetched as soon as its index is drawn: the drawing work spaces the
    // prefetches out, so several rows are in flight while the next indices are computed.
    auto prefetch = [this](std::uint64_t i) { prefetch_row(static_cast<std::size_t>(i)); };
    if (replace) {
      for (std::size_t i = 0; i < k; ++i) {
        const std::uint64_t r = rng_.bounded(size_);
        out[i] = static_cast<std::int64_t>(r);
        prefetch(r);
      }
      return;
    }
    if (k > size_) {
      throw std::invalid_argument(std::string(what) + ": cannot draw " + std::to_string(k) +
                                  " distinct transitions from a buffer holding " +
                                  std::to_string(size_) + "; pass replace=True or draw fewer");
    }
    sampler_.sample(rng_, size_, k, out, prefetch);
  }

  void prefetch_row(std::size_t i) const {
    const char* p = reinterpret_cast<const char*>(data_.get() + i * stride_);
    const std::size_t row_bytes = width_ * sizeof(float);
    for (std::size_t b = 0; b < row_bytes; b += 64) detail::prefetch(p + b);
    detail::prefetch(p + row_bytes - 1);
  }

  void gather_locked(const std::int64_t* idx, std::size_t k, const BatchView& out) const {
    // Rows are scattered over a buffer far larger than the caches: every row is a cache miss.
    // Prefetching a few rows ahead keeps several misses in flight instead of one (rows sampled
    // by draw_locked were already prefetched there; then these are cheap cache hits).
    constexpr std::size_t kAhead = 16;
    const float* base = data_.get();
    const std::size_t s = obs_dim_, a = act_dim_, w = stride_;
    auto prefetch_row_at = [&](std::int64_t i) { prefetch_row(static_cast<std::size_t>(i)); };
    for (std::size_t i = 0; i < k && i < kAhead; ++i) prefetch_row_at(idx[i]);
    for (std::size_t i = 0; i < k; ++i) {
      if (i + kAhead < k) prefetch_row_at(idx[i + kAhead]);
      const float* src = base + static_cast<std::size_t>(idx[i]) * w;
      if (out.obs) detail::copy_floats(out.obs + i * s, src, s);
      if (out.act) detail::copy_floats(out.act + i * a, src + s, a);
      if (out.rew) out.rew[i] = src[s + a];
      if (out.next_obs) detail::copy_floats(out.next_obs + i * s, src + s + a + 1, s);
      if (out.done) out.done[i] = src[2 * s + a + 1];
    }
  }

  // Fixed for the buffer's life (const): see "Thread safety" at the top.
  const std::size_t capacity_, obs_dim_, act_dim_, width_, stride_;
  const std::uint64_t seed_;
  const detail::Storage data_;
  // Guarded by mu_.
  std::size_t size_ = 0, pos_ = 0;
  Xoshiro256 rng_;
  DistinctSampler sampler_;
  std::vector<std::int64_t> scratch_;
  mutable std::mutex mu_;
};

/// Draws counts[i] transitions from buffers[i] (distinct within each buffer unless `replace`)
/// into one batch: rows [0, counts[0]) from buffers[0], the next counts[1] from buffers[1], ...
/// All buffers must share obs_dim and act_dim. Each buffer is locked only while it is sampled.
inline void sample_mixed(const std::vector<ReplayBuffer*>& buffers,
                         const std::vector<std::size_t>& counts, bool replace,
                         const BatchView& out) {
  if (buffers.size() != counts.size()) {
    throw std::invalid_argument("sample_mixed: " + std::to_string(buffers.size()) +
                                " buffers but " + std::to_string(counts.size()) + " counts");
  }
  if (buffers.empty()) throw std::invalid_argument("sample_mixed: no buffers given");
  const std::size_t s = buffers[0]->obs_dim(), a = buffers[0]->act_dim();
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    if (buffers[i] == nullptr) throw std::invalid_argument("sample_mixed: null buffer");
    if (buffers[i]->obs_dim() != s || buffers[i]->act_dim() != a) {
      throw std::invalid_argument("sample_mixed: buffer " + std::to_string(i) + " has obs_dim " +
                                  std::to_string(buffers[i]->obs_dim()) + ", act_dim " +
                                  std::to_string(buffers[i]->act_dim()) +
                                  " but buffer 0 has obs_dim " + std::to_string(s) + ", act_dim " +
                                  std::to_string(a));
    }
  }
  std::size_t row = 0;
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    auto lock = buffers[i]->lock();
    try {
      buffers[i]->sample_locked(counts[i], replace, out.offset(row, s, a), "sample_mixed");
    } catch (const std::invalid_argument& e) {  // name the buffer: "sample_mixed: buffer 1: ..."
      const std::string prefix = "sample_mixed: ", msg = e.what();
      const bool has_prefix = msg.compare(0, prefix.size(), prefix) == 0;
      throw std::invalid_argument(prefix + "buffer " + std::to_string(i) + ": " +
                                  (has_prefix ? msg.substr(prefix.size()) : msg));
    }
    row += counts[i];
  }
}

}  // namespace eor
