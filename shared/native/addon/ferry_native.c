/*
 * Ferry's native addon: the two per-page loops that are too slow in JS (perf-lab §4, §6).
 * Everything else native goes through koffi in shared/native/libc.ts.
 *
 *   hashPages(src, pageCount, pageSize, out)  XXH3_128 of each page into out[16*i..16*i+16)
 *   zeroPages(src, pageCount, pageSize, out)  out[i] = 1 if page i is all zero; returns the count
 */
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#define HASH_BYTES 16

/* Throws and returns 0 when the call itself failed: an N-API failure is a bug, not bad input. */
static int check(napi_env env, napi_status status, const char *what) {
  if (status == napi_ok) return 1;
  napi_throw_error(env, NULL, what);
  return 0;
}

/* Reads a Uint8Array (Buffer included) argument. */
static int get_bytes(napi_env env, napi_value value, const char *name, uint8_t **data, size_t *length) {
  bool is_typed = false;
  if (!check(env, napi_is_typedarray(env, value, &is_typed), "napi_is_typedarray")) return 0;
  napi_typedarray_type type = napi_int8_array;
  void *ptr = NULL;
  if (is_typed) {
    if (!check(env, napi_get_typedarray_info(env, value, &type, length, &ptr, NULL, NULL), "napi_get_typedarray_info"))
      return 0;
  }
  if (!is_typed || type != napi_uint8_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a Buffer or Uint8Array", name);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  *data = ptr;
  return 1;
}

/* Reads a non-negative integer argument that is exact in a double (counts and sizes here are far below 2^53). */
static int get_count(napi_env env, napi_value value, const char *name, uint64_t min, uint64_t *out) {
  napi_valuetype t;
  if (!check(env, napi_typeof(env, value, &t), "napi_typeof")) return 0;
  char msg[96];
  if (t != napi_number) {
    snprintf(msg, sizeof msg, "%s must be a number", name);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  double d;
  if (!check(env, napi_get_value_double(env, value, &d), "napi_get_value_double")) return 0;
  if (!(d >= (double)min) || d > 9007199254740991.0 || d != (double)(uint64_t)d) {
    snprintf(msg, sizeof msg, "%s must be an integer >= %llu", name, (unsigned long long)min);
    napi_throw_range_error(env, NULL, msg);
    return 0;
  }
  *out = (uint64_t)d;
  return 1;
}

struct page_args {
  uint8_t *src;
  uint8_t *out;
  uint64_t page_count;
  uint64_t page_size;
};

/* Parses (src, pageCount, pageSize, out) and checks that src holds the pages and out holds out_per_page each. */
static int get_page_args(napi_env env, napi_callback_info info, size_t out_per_page, struct page_args *a) {
  size_t argc = 4;
  napi_value argv[4];
  if (!check(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), "napi_get_cb_info")) return 0;
  if (argc < 4) {
    napi_throw_type_error(env, NULL, "expected (src, pageCount, pageSize, out)");
    return 0;
  }
  size_t src_len, out_len;
  if (!get_bytes(env, argv[0], "src", &a->src, &src_len)) return 0;
  if (!get_count(env, argv[1], "pageCount", 0, &a->page_count)) return 0;
  if (!get_count(env, argv[2], "pageSize", 1, &a->page_size)) return 0;
  if (!get_bytes(env, argv[3], "out", &a->out, &out_len)) return 0;
  /* Both products stay below 2^64 because each factor is below 2^53 and the lengths fit in size_t. */
  if (a->page_count > src_len / a->page_size) {
    napi_throw_range_error(env, NULL, "src is shorter than pageCount * pageSize");
    return 0;
  }
  if (a->page_count > out_len / out_per_page) {
    napi_throw_range_error(env, NULL, "out is too short for pageCount results");
    return 0;
  }
  return 1;
}

static inline void store_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static napi_value hash_pages(napi_env env, napi_callback_info info) {
  struct page_args a;
  if (!get_page_args(env, info, HASH_BYTES, &a)) return NULL;
  for (uint64_t i = 0; i < a.page_count; i++) {
    XXH128_hash_t h = XXH3_128bits(a.src + i * a.page_size, (size_t)a.page_size);
    store_le64(a.out + i * HASH_BYTES, h.low64);
    store_le64(a.out + i * HASH_BYTES + 8, h.high64);
  }
  return NULL;
}

/* OR of 64-bit words, eight at a time, leaving at the first block with a set bit: most data pages exit at once. */
static int page_is_zero(const uint8_t *p, size_t size) {
  size_t i = 0;
  for (; i + 64 <= size; i += 64) {
    uint64_t w[8];
    memcpy(w, p + i, sizeof w); /* memcpy: Buffers from the pool are not 8-byte aligned */
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return 0;
  }
  for (; i < size; i++)
    if (p[i] != 0) return 0;
  return 1;
}

static napi_value zero_pages(napi_env env, napi_callback_info info) {
  struct page_args a;
  if (!get_page_args(env, info, 1, &a)) return NULL;
  uint32_t zero = 0;
  for (uint64_t i = 0; i < a.page_count; i++) {
    int z = page_is_zero(a.src + i * a.page_size, (size_t)a.page_size);
    a.out[i] = (uint8_t)z;
    zero += (uint32_t)z;
  }
  napi_value result;
  if (!check(env, napi_create_uint32(env, zero, &result), "napi_create_uint32")) return NULL;
  return result;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_property_descriptor props[] = {
      {"hashPages", NULL, hash_pages, NULL, NULL, NULL, napi_enumerable, NULL},
      {"zeroPages", NULL, zero_pages, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (!check(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props), "napi_define_properties"))
    return NULL;
  return exports;
}
