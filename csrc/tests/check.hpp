// A tiny assert-style test harness (no external framework is available offline).
#pragma once

#include <cstdio>
#include <string>

namespace eor_test {
inline int& failures() {
  static int n = 0;
  return n;
}
}  // namespace eor_test

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++eor_test::failures();                                                       \
    }                                                                               \
  } while (0)

// Passes when `expr` throws `Exc` whose message contains `needle`.
#define CHECK_THROWS(expr, Exc, needle)                                                          \
  do {                                                                                           \
    bool thrown_ = false;                                                                        \
    try {                                                                                        \
      expr;                                                                                      \
    } catch (const Exc& e_) {                                                                    \
      thrown_ = std::string(e_.what()).find(needle) != std::string::npos;                        \
      if (!thrown_)                                                                              \
        std::fprintf(stderr, "%s:%d: message was: %s\n", __FILE__, __LINE__, e_.what());         \
    }                                                                                            \
    if (!thrown_) {                                                                              \
      std::fprintf(stderr, "%s:%d: expected %s containing \"%s\" from %s\n", __FILE__, __LINE__, \
                   #Exc, needle, #expr);                                                         \
      ++eor_test::failures();                                                                    \
    }                                                                                            \
  } while (0)

#define RUN(test)               \
  do {                          \
    std::printf("%s\n", #test); \
    test();                     \
  } while (0)

#define TEST_MAIN_RESULT()                                             \
  (eor_test::failures() == 0 ? (std::printf("all checks passed\n"), 0) \
                             : (std::printf("%d checks failed\n", eor_test::failures()), 1))
