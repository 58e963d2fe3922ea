/* lookout's tap: an Envoy 1.40 HTTP dynamic-module filter that copies bounded request and
 * response heads, bodies and trailers into shared-memory rings and keeps exact RED counters
 * in a shared-memory table. The byte layouts are tap/PROTOCOL.md's. It never blocks, never
 * parses anything but a path, a few headers and one protobuf field, and always returns
 * Continue. Each Envoy worker thread writes only its own counter area and its own rings. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "envoy_abi.h"
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the shared-memory layouts are little-endian"
#endif

#define EXPORT __attribute__((visibility("default")))
#define RLX __ATOMIC_RELAXED
#define CNT_MAGIC 0x31544e434b4f4f4cULL /* "LOOKCNT1" */
#define REC_MAGIC 0x3154504cU           /* "LPT1" */
#define PIECE_MAGIC 0x3150504cU         /* "LPP1" */
#define CNT_HEADER 1024u
#define AREA_HEADER 128u
#define SLOT 1216u
#define RING_HEADER 64u
#define HEAD_SECTION_MAX 65536u
#define GRPC_PREFIX 1024u  /* request body bytes kept for the gRPC model: 5-byte prefix + message */
#define INFLATE_MAX 512u   /* bounded decompression of that message's start */
#define MODEL_MAX 63u
#define STREAM_MIN 4096u   /* parts at least this long go into a ring by streaming stores */
#define PIECE_MIN 8192u    /* a body goes by pieces from this many bytes on */
#define PIECE_HEAD 16u
enum { SEC_REQ_HEAD, SEC_REQ_BODY, SEC_REQ_TRAIL, SEC_RESP_HEAD, SEC_RESP_BODY, SEC_RESP_TRAIL };
enum { F_REQ_TRUNC = 1, F_RESP_TRUNC = 2, F_GRPC = 4, F_LOCAL = 8, F_NO_RESPONSE = 16,
       F_REQ_PIECES = 32, F_RESP_PIECES = 64, F_TRACED = 128, F_SAMPLED = 256, F_PARENT = 512,
       F_SPAN_ONLY = 1024 };
#define HEAD 120u          /* a record's fixed head: facts, trace context, section lengths */
/* area header words (PROTOCOL.md) */
enum { A_RECORDS, A_RING_FULL, A_TRUNC_BUDGET, A_TRUNC_BODY, A_UNRECORDED, A_EXCHANGES, A_SLOTS_USED,
       A_SPANS_ONLY };

struct ring { uint8_t *base; size_t size; uint64_t cap, max_records; int fifo; };
struct route { int16_t *tok; size_t n; };  /* >= 0 a byte; ANY one non-'/' byte; STAR a run */
enum { ANY = -1, STAR = -2 };

struct cfg {
  uint8_t *cnt; size_t cnt_size;
  uint64_t threads, slots, nlat, nbytes, lat_bounds[32], byte_bounds[32];
  struct ring *rings; size_t nrings; uint64_t per_thread;
  uint64_t max_body, max_buffered;
  struct route *routes; uint32_t nroutes;
  bool tracing; uint64_t sample_ppm;  /* root traces kept, parts per million */
};

struct buf { uint8_t *p; size_t len, cap; };
struct part { const void *p; size_t len; };  /* bytes a ring record is written from */
struct stream {
  const struct cfg *c;
  struct buf sec[6];
  uint64_t held;                       /* bytes of copies counted against the thread budget */
  uint64_t t0_real, t0_mono, req_end, resp_end, req_bytes, resp_bytes;
  uint32_t flags, route, status, body_truncs;
  int32_t grpc_status;
  bool budget_trunc, req_heads_done, got_response, compressed_ok, finished;
  bool skip;                           /* no room when it began: counted, never copied */
  uint8_t trace[16], span[8], parent[8]; /* the W3C context the upstream was sent */
  char model[MODEL_MAX + 1];
  uint8_t *gp; size_t gp_len, gp_tried;  /* a gRPC call's first GRPC_PREFIX body bytes */
  uint64_t id;                         /* names the stream's pieces; 0 until its first */
  int64_t ring;                        /* the ring its pieces went to (its record follows); -1 */
  uint64_t piece_bytes[2];             /* request, response body bytes put as pieces */
  uint64_t pieces_sent;                /* records of its own ahead of its record: not counted */
};

static uint32_t next_thread;            /* thread indices handed out (atomic) */
static __thread int64_t my_thread = -1; /* this worker's index, claimed when it first taps */
static __thread uint64_t next_id;       /* stream ids: from the clock at the claim, then +1 */
static __thread uint64_t thread_held;   /* bytes all this worker's streams hold in copies */
static __thread uint32_t next_ring;     /* round-robin position among this worker's rings */
static __thread uint64_t rng;           /* trace and span ids: splitmix64, seeded per thread */

/* lookout reads this marker from the file, without loading it (sidecar/dataplane/abi.py) */
EXPORT const char lookout_tap_abi_marker[] = "lookout-tap-abi:" LOOKOUT_TAP_ABI;
EXPORT const char *lookout_tap_abi_version(void) { return LOOKOUT_TAP_ABI; }
const char *envoy_dynamic_module_on_program_init(void) { return LOOKOUT_TAP_ABI; }

static void tap_log(int level, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
  if (envoy_dynamic_module_callback_log)
    envoy_dynamic_module_callback_log(level, (envoy_dynamic_module_type_module_buffer){msg, len});
  else
    fprintf(stderr, "lookout_tap: %s\n", msg);
}

static uint64_t now(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t *word(uint8_t *p) { return (uint64_t *)(void *)p; }
static void bump(uint64_t *w, uint64_t v) { __atomic_store_n(w, __atomic_load_n(w, RLX) + v, RLX); }

/* ---------------------------------------------------------------- configuration */

static bool parse_u64(const char *s, uint64_t *out) {
  uint64_t v = 0;
  if (!*s) return false;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10) return false;
    v = v * 10 + (uint64_t)(*s - '0');
  }
  *out = v;
  return true;
}

static void *map_shm(const char *name, size_t *size) {
  int fd = shm_open(name, O_RDWR, 0);
  if (fd < 0) return NULL;
  struct stat st;
  void *p = MAP_FAILED;
  if (fstat(fd, &st) == 0 && st.st_size > 0)
    p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return NULL;
  *size = (size_t)st.st_size;
  return p;
}

/* A template becomes tokens: `{name}` (an identifier in braces, as routes.py) matches one or
 * more non-'/' bytes (ANY then STAR); every other byte, a lone '{' included, matches itself. */
static bool compile_route(const char *t, struct route *r) {
  size_t n = strlen(t);
  if (t[0] != '/' || !(r->tok = calloc(n + 1, sizeof *r->tok))) return false;
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    if (t[i] == '{' && j < n && (t[j] == '_' || (t[j] | 32) >= 'a') && (t[j] | 32) <= 'z') {
      while (j < n && (t[j] == '_' || ((t[j] | 32) >= 'a' && (t[j] | 32) <= 'z') ||
                       (t[j] >= '0' && t[j] <= '9')))
        j++;
      if (j < n && t[j] == '}') {
        r->tok[r->n++] = ANY;
        r->tok[r->n++] = STAR;
        i = j + 1;
        continue;
      }
    }
    r->tok[r->n++] = (uint8_t)t[i++];
  }
  return true;
}

static void free_cfg(struct cfg *c) {
  if (!c) return;
  for (size_t i = 0; i < c->nrings; i++) {
    if (c->rings[i].base) munmap(c->rings[i].base, c->rings[i].size);
    if (c->rings[i].fifo >= 0) close(c->rings[i].fifo);
  }
  for (uint32_t i = 0; i < c->nroutes; i++) free(c->routes[i].tok);
  if (c->cnt) munmap(c->cnt, c->cnt_size);
  free(c->rings);
  free(c->routes);
  free(c);
}

static bool attach_counters(struct cfg *c, const char *name) {
  if (!(c->cnt = map_shm(name, &c->cnt_size)) || c->cnt_size < CNT_HEADER) return false;
  uint64_t *h = word(c->cnt);
  c->threads = h[2], c->slots = h[3], c->nlat = h[4], c->nbytes = h[5];
  if (h[0] != CNT_MAGIC || h[1] != 1 || !c->threads || c->threads > 4096 || !c->slots ||
      c->slots > (1u << 20) || c->nlat > 31 || c->nbytes > 31)
    return false;
  if (c->cnt_size < CNT_HEADER + c->threads * (AREA_HEADER + c->slots * SLOT)) return false;
  memcpy(c->lat_bounds, c->cnt + 64, sizeof c->lat_bounds);
  memcpy(c->byte_bounds, c->cnt + 320, sizeof c->byte_bounds);
  for (uint64_t i = 1; i < c->nlat; i++) if (c->lat_bounds[i] <= c->lat_bounds[i - 1]) return false;
  for (uint64_t i = 1; i < c->nbytes; i++) if (c->byte_bounds[i] <= c->byte_bounds[i - 1]) return false;
  return true;
}

static bool attach_ring(struct cfg *c, char *spec) {
  char *a = strchr(spec, ','), *b = strrchr(spec, ',');
  uint64_t max_records;
  if (!a || a == b || !parse_u64(b + 1, &max_records) || !max_records) return false;
  *a = *b = '\0';
  struct ring *r = realloc(c->rings, (c->nrings + 1) * sizeof *r);
  if (!r) return false;
  c->rings = r;
  r = &c->rings[c->nrings++];
  *r = (struct ring){.fifo = -1, .max_records = max_records};
  if (!(r->base = map_shm(spec, &r->size))) return false;
  r->cap = r->size - RING_HEADER;
  if (r->size < RING_HEADER + 32 || r->cap % 8) return false;
  r->fifo = open(a + 1, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  return r->fifo >= 0 && fstat(r->fifo, &st) == 0 && S_ISFIFO(st.st_mode);
}

static const char *config_line(struct cfg *c, char *line, uint64_t *layout, bool *have) {
  char *eq = strchr(line, '=');
  if (!eq) return "a line without '='";
  *eq = '\0';
  char *v = eq + 1;
  if (!strcmp(line, "layout")) return parse_u64(v, layout) ? NULL : "bad layout";
  if (!strcmp(line, "counters")) {
    if (c->cnt) return "counters given twice";
    return attach_counters(c, v) ? NULL : "cannot attach the counters segment (name, magic, layout or size)";
  }
  if (!strcmp(line, "ring")) return attach_ring(c, v) ? NULL : "cannot attach a ring (NAME,FIFO_PATH,MAX_RECORDS)";
  if (!strcmp(line, "ring_workers")) return parse_u64(v, &c->per_thread) ? NULL : "bad ring_workers";
  if (!strcmp(line, "max_body")) return (*have = parse_u64(v, &c->max_body)) ? NULL : "bad max_body";
  if (!strcmp(line, "max_buffered")) return parse_u64(v, &c->max_buffered) ? NULL : "bad max_buffered";
  if (!strcmp(line, "trace_sampling_ppm"))
    return (c->tracing = parse_u64(v, &c->sample_ppm)) && c->sample_ppm <= 1000000u
           ? NULL : "bad trace_sampling_ppm (0..1000000)";
  if (!strcmp(line, "route")) {
    struct route *r = realloc(c->routes, (c->nroutes + 1) * sizeof *r);
    if (!r) return "out of memory";
    c->routes = r;
    c->routes[c->nroutes] = (struct route){0};
    return compile_route(v, &c->routes[c->nroutes++]) ? NULL : "a route must start with '/'";
  }
  return "unknown key";
}

envoy_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_filter_config_envoy_ptr envoy, envoy_dynamic_module_type_envoy_buffer name,
    envoy_dynamic_module_type_envoy_buffer config) {
  (void)envoy, (void)name;
  if (!envoy_dynamic_module_callback_http_get_headers ||
      !envoy_dynamic_module_callback_http_get_headers_size ||
      !envoy_dynamic_module_callback_http_get_body_chunks ||
      !envoy_dynamic_module_callback_http_get_body_chunks_size ||
      !envoy_dynamic_module_callback_http_set_header) {
    tap_log(ENVOY_LOG_ERROR, "refused: this Envoy lacks a callback the tap needs");
    return NULL;
  }
  struct cfg *c = calloc(1, sizeof *c);
  char *text = malloc(config.length + 1);
  const char *error = (!c || !text) ? "out of memory" : NULL;
  uint64_t layout = 0;
  bool have_body = false;
  size_t lineno = 0;
  if (!error && config.length && memchr(config.ptr, '\0', config.length)) error = "a NUL byte";
  if (!error) {
    memcpy(text, config.ptr, config.length);
    text[config.length] = '\0';
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && !error;
         line = strtok_r(NULL, "\n", &save)) {
      lineno++;
      size_t n = strlen(line);
      if (n && line[n - 1] == '\r') line[--n] = '\0';
      if (n) error = config_line(c, line, &layout, &have_body);
    }
    if (!error && layout != 4) error = "layout must be 4";
    if (!error && !c->cnt) error = "no counters";
    if (!error && (!c->per_thread || c->nrings != c->threads * c->per_thread))
      error = "rings must number threads x ring_workers";
    if (!error && (!have_body || !c->max_buffered)) error = "max_body and max_buffered are required";
  }
  free(text);
  if (error) {
    tap_log(ENVOY_LOG_ERROR, "refused the configuration (line %zu): %s", lineno, error);
    free_cfg(c);
    return NULL;
  }
  tap_log(ENVOY_LOG_INFO, "tapping: %llu threads x %llu rings, %u routes",
          (unsigned long long)c->threads, (unsigned long long)c->per_thread, c->nroutes);
  return c;
}

void envoy_dynamic_module_on_http_filter_config_destroy(envoy_filter_config_module_ptr c) {
  free_cfg((struct cfg *)c);
}

/* ---------------------------------------------------------------- reading headers */

/* A header map's entries, fetched in one call and searched here: Envoy 1.40's get_header
 * builds a lower-cased key and searches the map on every call (1,000-1,700 instructions
 * under callgrind), its get_headers lists the whole map for about 800. */
#define HEADERS_LOCAL 48u
struct headers {
  envoy_dynamic_module_type_envoy_http_header *h, local[HEADERS_LOCAL];
  size_t n;
};

static void unfetch(struct headers *hs) {
  if (hs->h != hs->local) free(hs->h);
  hs->h = hs->local, hs->n = 0;
}

/* No entries when the map is absent or a larger one cannot be allocated (nothing copied). */
static void fetch(struct headers *hs, envoy_filter_envoy_ptr f, int type) {
  hs->n = envoy_dynamic_module_callback_http_get_headers_size(f, type);
  hs->h = hs->n <= HEADERS_LOCAL ? hs->local : calloc(hs->n, sizeof *hs->h);
  if (!hs->h || (hs->n && !envoy_dynamic_module_callback_http_get_headers(f, type, hs->h)))
    unfetch(hs);
}

/* How many entries `key` has (Envoy keeps names lower case), the first one's value in v:n. */
static size_t find(const struct headers *hs, const char *key, const uint8_t **v, size_t *n) {
  size_t k = strlen(key), count = 0;
  for (size_t i = 0; i < hs->n; i++) {
    const envoy_dynamic_module_type_envoy_http_header *e = &hs->h[i];
    if (e->key_length != k || memcmp(e->key_ptr, key, k) || count++) continue;
    *v = e->value_ptr ? (const uint8_t *)e->value_ptr : (const uint8_t *)"";
    *n = e->value_ptr ? e->value_length : 0;
  }
  return count;
}

static bool has(const struct headers *hs, const char *key) {
  const uint8_t *v;
  size_t n;
  return find(hs, key, &v, &n) > 0;
}

static bool prefix(const uint8_t *v, size_t n, const char *p) {
  size_t k = strlen(p);
  return n >= k && !strncasecmp((const char *)v, p, k);
}

static int64_t number(const uint8_t *v, size_t n) {
  int64_t x = 0;
  if (!n || n > 9) return -1;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    x = x * 10 + (v[i] - '0');
  }
  return x;
}

static bool grow(struct stream *s, struct buf *b, size_t want) {
  if (want <= b->cap) return true;
  size_t cap = b->cap * 2 > want ? b->cap * 2 : want;
  if (cap < 256) cap = 256;
  if (thread_held + (cap - b->cap) > s->c->max_buffered) cap = want;
  if (thread_held + (cap - b->cap) > s->c->max_buffered) return false;
  uint8_t *p = realloc(b->p, cap);
  if (!p) return false;
  thread_held += cap - b->cap, s->held += cap - b->cap;
  b->p = p, b->cap = cap;
  return true;
}

static void release(struct stream *s, struct buf *b) {
  thread_held -= b->cap, s->held -= b->cap;
  free(b->p);
  *b = (struct buf){0};
}

/* A header section: `u32 name_len, u32 value_len, name, value` per entry, whole entries up
 * to 64 KiB. Headers count against the budget but are never refused by it (bounded). */
static void copy_headers(struct stream *s, const struct headers *hs, int sec) {
  struct buf *b = &s->sec[sec];
  release(s, b);
  const envoy_dynamic_module_type_envoy_http_header *h = hs->h;
  size_t total = 0;
  for (size_t i = 0; i < hs->n; i++) {
    uint64_t e = 8 + (uint64_t)h[i].key_length + h[i].value_length;
    if (h[i].key_length > HEAD_SECTION_MAX || h[i].value_length > HEAD_SECTION_MAX ||
        total + e > HEAD_SECTION_MAX)
      break;
    total += e;
  }
  if (!total || !(b->p = malloc(total))) return;
  b->cap = total, thread_held += total, s->held += total;
  for (size_t i = 0; b->len < total; i++) {
    uint32_t kl = (uint32_t)h[i].key_length, vl = (uint32_t)h[i].value_length;
    memcpy(b->p + b->len, &kl, 4), memcpy(b->p + b->len + 4, &vl, 4);
    if (kl) memcpy(b->p + b->len + 8, h[i].key_ptr, kl);
    if (vl) memcpy(b->p + b->len + 8 + kl, h[i].value_ptr, vl);
    b->len += 8 + (size_t)kl + vl;
  }
}

/* A map's entries into a section, fetched for it alone. */
static void copy_map(struct stream *s, envoy_filter_envoy_ptr f, int type, int sec) {
  struct headers hs;
  fetch(&hs, f, type);
  copy_headers(s, &hs, sec);
  unfetch(&hs);
}

/* ---------------------------------------------------------------- the path */

static bool route_match(const struct route *r, const uint8_t *s, size_t n) {
  size_t i = 0, j = 0, star = SIZE_MAX, from = 0;
  while (j < n) {
    if (i < r->n && (r->tok[i] == s[j] || (r->tok[i] == ANY && s[j] != '/'))) i++, j++;
    else if (i < r->n && r->tok[i] == STAR) star = i++, from = j;
    else if (star != SIZE_MAX && s[from] != '/') i = star + 1, j = ++from;
    else return false;  /* a '/' aligns with the template's next '/': no other choice helps */
  }
  while (i < r->n && r->tok[i] == STAR) i++;
  return i == r->n;
}

static int hexval(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 32;
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static void read_path(struct stream *s, const uint8_t *p, size_t n) {
  const uint8_t *q = memchr(p, '?', n);
  if (q) n = (size_t)(q - p);
  s->route = s->c->nroutes;
  for (uint32_t i = 0; i < s->c->nroutes; i++)
    if (route_match(&s->c->routes[i], p, n) ||
        (n > 1 && p[n - 1] == '/' && route_match(&s->c->routes[i], p, n - 1))) {
      s->route = i;
      break;
    }
  static const char v2[] = "/v2/models/";
  if (n <= sizeof v2 - 1 || memcmp(p, v2, sizeof v2 - 1)) return;
  size_t k = 0;
  for (size_t i = sizeof v2 - 1; i < n && p[i] != '/'; i++) {
    int c = p[i];
    if (c == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0)
      c = hexval(p[i + 1]) * 16 + hexval(p[i + 2]), i += 2;
    if (!c || k == MODEL_MAX) { k = 0; break; }
    s->model[k++] = (char)c;
  }
  s->model[k] = '\0';
}

/* ---------------------------------------------------------------- gRPC model */

static bool varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v) {
  *v = 0;
  for (unsigned shift = 0; *i < n && shift < 64; shift += 7) {
    uint8_t b = p[(*i)++];
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

/* Field 1 (a string) of a protobuf message prefix, skipping other fields before it. */
static void proto_field1(const uint8_t *p, size_t n, char *model) {
  size_t i = 0;
  uint64_t tag, len;
  for (int fields = 0; i < n && fields < 64; fields++) {
    if (!varint(p, n, &i, &tag)) return;
    switch (tag & 7) {
    case 0: if (!varint(p, n, &i, &len)) return; break;
    case 1: i += 8; break;
    case 5: i += 4; break;
    case 2:
      if (!varint(p, n, &i, &len) || len > n - i) return;
      if (tag >> 3 == 1) {
        if (len && len <= MODEL_MAX && !memchr(p + i, '\0', len)) memcpy(model, p + i, len);
        return;
      }
      i += len;
      break;
    default: return;
    }
    if (tag >> 3 == 1) return;
  }
}

/* A gRPC message's length, from its 5-byte prefix (a flag byte, then big-endian u32). */
static uint32_t grpc_length(const uint8_t *prefix) {
  return (uint32_t)prefix[1] << 24 | (uint32_t)prefix[2] << 16 | (uint32_t)prefix[3] << 8 | prefix[4];
}

static void grpc_model(struct stream *s) {
  if (s->gp_len < 5) return;
  uint32_t len = grpc_length(s->gp);
  size_t avail = s->gp_len - 5 < len ? s->gp_len - 5 : len;
  if (!(s->gp[0] & 1)) {
    proto_field1(s->gp + 5, avail, s->model);
    return;
  }
  if (!s->compressed_ok) return;
  uint8_t out[INFLATE_MAX];
  z_stream z = {0};
  if (inflateInit2(&z, 15 + 32) != Z_OK) return;  /* zlib or gzip wrapper */
  z.next_in = s->gp + 5, z.avail_in = (uInt)avail, z.next_out = out, z.avail_out = sizeof out;
  int rc = inflate(&z, Z_SYNC_FLUSH);
  size_t got = sizeof out - z.avail_out;
  inflateEnd(&z);
  if (rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR) proto_field1(out, got, s->model);
}

/* ---------------------------------------------------------------- trace context */

static uint64_t random64(void) {
  if (!rng && getrandom(&rng, sizeof rng, GRND_NONBLOCK) != sizeof rng)
    rng = now(CLOCK_REALTIME) ^ (uint64_t)(uintptr_t)&rng;  /* no entropy yet: still unique */
  uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* n bytes from 2n lower-case hex digits (W3C trace context allows no other). */
static bool lower_hex(const uint8_t *v, size_t n, uint8_t *out) {
  for (size_t j = 0; j < 2 * n; j++)
    if (!((v[j] >= '0' && v[j] <= '9') || (v[j] >= 'a' && v[j] <= 'f'))) return false;
  for (size_t j = 0; j < n; j++) out[j] = (uint8_t)(hexval(v[2 * j]) << 4 | hexval(v[2 * j + 1]));
  return true;
}

static bool zero(const uint8_t *p, size_t n) {
  uint8_t any = 0;
  for (size_t i = 0; i < n; i++) any |= p[i];
  return !any;
}

/* The caller's W3C `traceparent`: version 00 is exactly 55 bytes, a later version at
 * least that with a '-' next; version ff, upper-case hex and zero ids are invalid. */
static bool caller_context(const uint8_t *v, size_t n, uint8_t trace[16], uint8_t parent[8],
                           uint8_t *flags) {
  uint8_t version;
  if (n < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || !lower_hex(v, 1, &version) ||
      version == 0xff || (version == 0 ? n != 55 : n > 55 && v[55] != '-'))
    return false;
  return lower_hex(v + 3, 16, trace) && !zero(trace, 16) && lower_hex(v + 36, 8, parent) &&
         !zero(parent, 8) && lower_hex(v + 53, 1, flags);
}

static void to_hex(char *out, const uint8_t *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) out[2 * i] = digits[p[i] >> 4], out[2 * i + 1] = digits[p[i] & 15];
}

/* Envoy's tracer made a span object per request, sampled or not (docs/PERFORMANCE.md
 * prices it); the tap only decides, as OpenTelemetry's ParentBased(TraceIdRatioBased)
 * does, and sends the upstream its span's context. The worker makes the span. */
static void trace_context(struct stream *s, envoy_filter_envoy_ptr f, const struct headers *hs) {
  const uint8_t *v;
  size_t n, values = find(hs, "traceparent", &v, &n);
  uint8_t flags = 0;
  /* two traceparent values are invalid too (W3C): the trace begins here */
  if (values == 1 && caller_context(v, n, s->trace, s->parent, &flags)) {
    s->flags |= F_PARENT | (flags & 1 ? F_SAMPLED : 0);
  } else {
    uint64_t high = random64(), low = random64() | 1;
    for (int i = 0; i < 8; i++) s->trace[i] = (uint8_t)(high >> (56 - 8 * i)),
                                s->trace[8 + i] = (uint8_t)(low >> (56 - 8 * i));
    memset(s->parent, 0, sizeof s->parent);
    /* TraceIdRatioBased: the id's low 64 bits below ratio x 2^64 */
    if ((unsigned __int128)low < ((unsigned __int128)s->c->sample_ppm << 64) / 1000000u)
      s->flags |= F_SAMPLED;
  }
  uint64_t span = random64() | 1;
  memcpy(s->span, &span, 8);
  char value[55] = "00-";
  to_hex(value + 3, s->trace, 16), value[35] = '-';
  to_hex(value + 36, s->span, 8), value[52] = '-';
  value[53] = '0', value[54] = s->flags & F_SAMPLED ? '1' : '0';
  s->flags |= F_TRACED;
  /* adding skips the search and removal that setting does, where there is nothing to replace */
  bool (*put_header)(envoy_filter_envoy_ptr, int, envoy_dynamic_module_type_module_buffer,
                     envoy_dynamic_module_type_module_buffer) =
      !values && envoy_dynamic_module_callback_http_add_header
          ? envoy_dynamic_module_callback_http_add_header
          : envoy_dynamic_module_callback_http_set_header;
  put_header(f, ENVOY_REQUEST_HEADER, (envoy_dynamic_module_type_module_buffer){"traceparent", 11},
             (envoy_dynamic_module_type_module_buffer){value, sizeof value});
}

/* ---------------------------------------------------------------- per stream */

static bool room(const struct stream *s);

envoy_filter_module_ptr envoy_dynamic_module_on_http_filter_new(envoy_filter_config_module_ptr c,
                                                                envoy_filter_envoy_ptr f) {
  (void)f;
  struct stream *s = c ? calloc(1, sizeof *s) : NULL;
  if (!s) return NULL;
  s->c = c;
  s->t0_real = now(CLOCK_REALTIME), s->t0_mono = now(CLOCK_MONOTONIC);
  s->req_end = s->t0_mono;
  s->route = s->c->nroutes, s->grpc_status = -1, s->ring = -1;
  return s;
}

int envoy_dynamic_module_on_http_filter_request_headers(envoy_filter_envoy_ptr f,
                                                        envoy_filter_module_ptr m, bool eos) {
  struct stream *s = (struct stream *)m;
  const uint8_t *v;
  size_t n;
  if (!s) return ENVOY_CONTINUE;
  /* a ring with no room now will most likely have none when this exchange ends: copying
   * its heads and bodies would only be thrown away (at saturation, most of them) */
  s->skip = !room(s);
  struct headers hs;
  fetch(&hs, f, ENVOY_REQUEST_HEADER);
  if (find(&hs, ":path", &v, &n)) read_path(s, v, n);
  if (find(&hs, "content-type", &v, &n) && prefix(v, n, "application/grpc")) {
    s->flags |= F_GRPC;
    s->model[0] = '\0';  /* a gRPC call names its model in the body */
    s->compressed_ok = find(&hs, "grpc-encoding", &v, &n) &&
                       ((n == 4 && prefix(v, n, "gzip")) || (n == 7 && prefix(v, n, "deflate")));
  }
  if (s->c->tracing) trace_context(s, f, &hs);
  unfetch(&hs);
  (void)eos;
  return ENVOY_CONTINUE;
}

/* This worker's index, claimed the first time it taps; false past the configured threads
 * (it then taps nothing: finish counts it untapped). */
static bool tapping(const struct cfg *c) {
  if (my_thread < 0) {
    my_thread = __atomic_fetch_add(&next_thread, 1, RLX);
    __atomic_fetch_add(word(c->cnt) + 7, 1, RLX);
    next_id = now(CLOCK_REALTIME);  /* a restarted Envoy's ids do not meet its last ones */
  }
  return (uint64_t)my_thread < c->threads;
}

static bool ring_put(struct ring *r, const struct part *parts, size_t nparts, uint64_t size,
                     uint64_t slack, bool reserve);

/* A record into the stream's ring: once its first piece has chosen one, that ring (the
 * reader joins a stream's pieces and its record there); else the thread's rings in turn.
 * An exchange counts as one record against a ring's MAX_RECORDS, however many pieces. */
static bool put(struct stream *s, const struct part *parts, size_t nparts, uint64_t size,
                bool reserve) {
  const struct cfg *c = s->c;
  struct ring *mine = &c->rings[(uint64_t)my_thread * c->per_thread];
  if (s->ring >= 0) return ring_put(&mine[s->ring], parts, nparts, size, s->pieces_sent, reserve);
  for (uint64_t i = 0; i < c->per_thread; i++) {
    uint64_t k = (next_ring + i) % c->per_thread;
    if (ring_put(&mine[k], parts, nparts, size, 0, reserve)) {
      next_ring = (uint32_t)((k + 1) % c->per_thread);
      s->ring = (int64_t)k;
      return true;
    }
  }
  return false;
}

/* Every record a ring may hold is written and not yet taken (past `slack` more), or its
 * reader is closing it. */
static bool ring_full(const struct ring *r, uint64_t slack) {
  uint64_t *h = word(r->base);
  return __atomic_load_n(&h[2], RLX) - __atomic_load_n(&h[3], __ATOMIC_ACQUIRE) >=
         r->max_records + slack || __atomic_load_n(&h[5], __ATOMIC_ACQUIRE);
}

/* Whether one of this worker's rings could take an exchange's record now. */
static bool room(const struct stream *s) {
  const struct cfg *c = s->c;
  if (!tapping(c)) return false;
  struct ring *mine = &c->rings[(uint64_t)my_thread * c->per_thread];
  for (uint64_t i = 0; i < c->per_thread; i++)
    if (!ring_full(&mine[i], 0)) return true;
  return false;
}

/* A body callback's bytes straight from Envoy's buffer into the ring, as one piece record
 * (PROTOCOL.md): no copy of the tap's own, nothing held against the budget. A piece the
 * ring refuses cuts the body (the reader must not take the rest for the whole). */
static void put_piece(struct stream *s, int sec, uint32_t cut, uint64_t total,
                      const envoy_dynamic_module_type_envoy_buffer *chunks, size_t n) {
  int which = sec == SEC_RESP_BODY;
  uint64_t room = s->c->max_body - s->piece_bytes[which], take = total < room ? total : room;
  struct part local[65], *parts = n < 65 ? local : calloc(n + 1, sizeof *parts);
  if (!parts) {
    s->flags |= cut, s->body_truncs++;
    return;
  }
  if (!s->id) s->id = next_id++;
  uint8_t head[PIECE_HEAD];
  uint32_t magic = PIECE_MAGIC, side = (uint32_t)which;
  memcpy(head, &magic, 4), memcpy(head + 4, &side, 4), memcpy(head + 8, &s->id, 8);
  parts[0] = (struct part){head, sizeof head};
  size_t k = 1;
  for (uint64_t left = take, i = 0; i < n && left; i++) {
    size_t len = chunks[i].ptr ? chunks[i].length : 0;
    if (len > left) len = (size_t)left;
    if (len) parts[k++] = (struct part){chunks[i].ptr, len}, left -= len;
  }
  if (take && put(s, parts, k, PIECE_HEAD + take, false))
    s->piece_bytes[which] += take, s->pieces_sent++;
  else take = 0;
  if (take < total) s->flags |= cut, s->body_truncs++;
  if (parts != local) free(parts);
}

/* A callback's bytes into the tap's own buffer of the body (under PIECE_MIN, or gathering
 * small callbacks into a piece), up to the copy limit (less what went ahead in pieces) and
 * the thread's budget. */
static void keep(struct stream *s, struct buf *b, int sec, uint32_t cut,
                 const envoy_dynamic_module_type_envoy_buffer *chunks, size_t n) {
  uint64_t sent = s->piece_bytes[sec == SEC_RESP_BODY];
  for (size_t i = 0; i < n; i++) {
    const uint8_t *p = (const uint8_t *)chunks[i].ptr;
    size_t len = p ? chunks[i].length : 0;
    if ((s->flags & cut) || !len) continue;
    size_t room = s->c->max_body - sent - b->len, take = len < room ? len : room;
    if (take && !grow(s, b, b->len + take)) {
      s->flags |= F_REQ_TRUNC | F_RESP_TRUNC, s->budget_trunc = true;
      continue;
    }
    if (take) memcpy(b->p + b->len, p, take), b->len += take;
    if (take < len) s->flags |= cut, s->body_truncs++;
  }
}

/* What a body going by pieces has gathered from small callbacks, as one piece. */
static void flush(struct stream *s, int sec, uint32_t cut) {
  struct buf *b = &s->sec[sec];
  if (!b->len) return;
  if (!(s->flags & cut)) {
    envoy_dynamic_module_type_envoy_buffer gathered = {(const char *)b->p, b->len};
    put_piece(s, sec, cut, b->len, &gathered, 1);
  }
  b->len = 0;
}

static void copy_body(struct stream *s, envoy_filter_envoy_ptr f, int type, int sec, uint32_t cut,
                      bool eos) {
  bool prefix_wanted = sec == SEC_REQ_BODY && (s->flags & F_GRPC) && s->gp_len < GRPC_PREFIX;
  if (s->skip && !prefix_wanted && envoy_dynamic_module_callback_http_get_body_size) {
    /* counted, not copied: its length alone, without listing its slices */
    uint64_t total = envoy_dynamic_module_callback_http_get_body_size(f, type);
    if (sec == SEC_REQ_BODY) s->req_bytes += total; else s->resp_bytes += total;
    return;
  }
  envoy_dynamic_module_type_envoy_buffer local[64], *chunks = local;
  size_t n = envoy_dynamic_module_callback_http_get_body_chunks_size(f, type);
  if (!n) return;
  if (n > 64 && !(chunks = calloc(n, sizeof *chunks))) {
    s->flags |= cut;  /* cannot see it: it is not whole */
    return;
  }
  if (!envoy_dynamic_module_callback_http_get_body_chunks(f, type, chunks)) n = 0;
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *p = (const uint8_t *)chunks[i].ptr;
    size_t len = p ? chunks[i].length : 0;
    total += len;
    if (prefix_wanted && s->gp_len < GRPC_PREFIX && len &&
        (s->gp || (s->gp = malloc(GRPC_PREFIX)))) {  /* HTTP streams never zero or touch it */
      size_t k = GRPC_PREFIX - s->gp_len < len ? GRPC_PREFIX - s->gp_len : len;
      memcpy(s->gp + s->gp_len, p, k), s->gp_len += k;
    }
  }
  if (sec == SEC_REQ_BODY) s->req_bytes += total; else s->resp_bytes += total;
  if (s->skip) total = 0;  /* counted and, for gRPC, its model read: nothing copied */
  struct buf *b = &s->sec[sec];
  uint32_t pieces = sec == SEC_REQ_BODY ? F_REQ_PIECES : F_RESP_PIECES;
  if (!(s->flags & (pieces | cut)) && b->len + total >= PIECE_MIN && s->c->max_body &&
      tapping(s->c))
    s->flags |= pieces;  /* a large body: by pieces from here to its end */
  if (!total || (s->flags & cut)) {
    /* nothing to copy */
  } else if (!(s->flags & pieces)) {
    keep(s, b, sec, cut, chunks, n);
  } else if (total >= PIECE_MIN) {  /* straight from Envoy's buffer, after what was gathered */
    flush(s, sec, cut);
    put_piece(s, sec, cut, total, chunks, n);
  } else {  /* small callbacks are gathered into pieces of PIECE_MIN: a piece per byte never */
    keep(s, b, sec, cut, chunks, n);
    if (b->len >= PIECE_MIN || eos) flush(s, sec, cut);
  }
  if (chunks != local) free(chunks);
}

int envoy_dynamic_module_on_http_filter_request_body(envoy_filter_envoy_ptr f,
                                                     envoy_filter_module_ptr m, bool eos) {
  struct stream *s = (struct stream *)m;
  if (!s) return ENVOY_CONTINUE;
  copy_body(s, f, ENVOY_RECEIVED_REQUEST_BODY, SEC_REQ_BODY, F_REQ_TRUNC, eos);
  s->req_end = now(CLOCK_MONOTONIC);
  if ((s->flags & F_GRPC) && !s->model[0] && s->gp_len > s->gp_tried) {
    s->gp_tried = s->gp_len;  /* each new prefix byte tried once: at most GRPC_PREFIX */
    grpc_model(s);
  }
  return ENVOY_CONTINUE;
}

int envoy_dynamic_module_on_http_filter_request_trailers(envoy_filter_envoy_ptr f,
                                                         envoy_filter_module_ptr m) {
  struct stream *s = (struct stream *)m;
  if (!s) return ENVOY_CONTINUE;
  if (!s->skip) copy_map(s, f, ENVOY_REQUEST_TRAILER, SEC_REQ_TRAIL);
  s->req_end = now(CLOCK_MONOTONIC);
  return ENVOY_CONTINUE;
}

static void grpc_status_from(struct stream *s, const struct headers *hs) {
  const uint8_t *v;
  size_t n;
  if (!(s->flags & F_GRPC)) return;
  if (find(hs, "grpc-status", &v, &n)) s->grpc_status = (int32_t)number(v, n);
  if (has(hs, "lookout-error")) s->flags |= F_LOCAL;
}

int envoy_dynamic_module_on_http_filter_response_headers(envoy_filter_envoy_ptr f,
                                                         envoy_filter_module_ptr m, bool eos) {
  struct stream *s = (struct stream *)m;
  const uint8_t *v;
  size_t n;
  if (!s) return ENVOY_CONTINUE;
  s->got_response = true;
  s->resp_end = now(CLOCK_MONOTONIC);
  if (!s->skip) {
    copy_map(s, f, ENVOY_REQUEST_HEADER, SEC_REQ_HEAD);  /* as the upstream was sent them */
    s->req_heads_done = true;
  }
  struct headers hs;
  fetch(&hs, f, ENVOY_RESPONSE_HEADER);
  if (find(&hs, ":status", &v, &n) && number(v, n) >= 0) s->status = (uint32_t)number(v, n);
  if (has(&hs, "x-lookout-error")) s->flags |= F_LOCAL;
  grpc_status_from(s, &hs);
  if (!s->skip) copy_headers(s, &hs, SEC_RESP_HEAD);
  unfetch(&hs);
  (void)eos;
  return ENVOY_CONTINUE;
}

int envoy_dynamic_module_on_http_filter_response_body(envoy_filter_envoy_ptr f,
                                                      envoy_filter_module_ptr m, bool eos) {
  struct stream *s = (struct stream *)m;
  if (!s) return ENVOY_CONTINUE;
  copy_body(s, f, ENVOY_RECEIVED_RESPONSE_BODY, SEC_RESP_BODY, F_RESP_TRUNC, eos);
  s->resp_end = now(CLOCK_MONOTONIC);
  return ENVOY_CONTINUE;
}

int envoy_dynamic_module_on_http_filter_response_trailers(envoy_filter_envoy_ptr f,
                                                          envoy_filter_module_ptr m) {
  struct stream *s = (struct stream *)m;
  if (!s) return ENVOY_CONTINUE;
  struct headers hs;
  fetch(&hs, f, ENVOY_RESPONSE_TRAILER);
  grpc_status_from(s, &hs);
  if (!s->skip) copy_headers(s, &hs, SEC_RESP_TRAIL);
  unfetch(&hs);
  s->resp_end = now(CLOCK_MONOTONIC);
  return ENVOY_CONTINUE;
}

/* ---------------------------------------------------------------- finishing */

/* A part into the ring. The ring is larger than the caches and its lines were last touched
 * by the reader on another core, so a plain copy reads each line in before writing it:
 * at 100 KB that was 14 us against 4 with streaming stores, which bypass the cache (the
 * reader, not Envoy, reads the bytes next). Ordered before the record is published by the
 * caller's fence (ring_put). */
static void copy_out(uint8_t *to, const uint8_t *from, size_t n) {
#if defined(__SSE2__)
  if (n >= STREAM_MIN) {
    size_t lead = (16 - ((uintptr_t)to & 15)) & 15;
    memcpy(to, from, lead), to += lead, from += lead, n -= lead;
    for (; n >= 64; n -= 64, to += 64, from += 64) {
      __m128i a = _mm_loadu_si128((const __m128i *)(const void *)from);
      __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(from + 16));
      __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(from + 32));
      __m128i d = _mm_loadu_si128((const __m128i *)(const void *)(from + 48));
      _mm_stream_si128((__m128i *)(void *)to, a), _mm_stream_si128((__m128i *)(void *)(to + 16), b);
      _mm_stream_si128((__m128i *)(void *)(to + 32), c), _mm_stream_si128((__m128i *)(void *)(to + 48), d);
    }
  }
#endif
  memcpy(to, from, n);
}

/* `slack`: records of the same exchange already in the ring (its pieces), not counted;
 * `reserve`: a span-only record, which may use the last eighth of the ring's records. */
static bool ring_put(struct ring *r, const struct part *parts, size_t nparts, uint64_t size,
                     uint64_t slack, bool reserve) {
  uint64_t *h = word(r->base);
  if (ring_full(r, reserve ? slack + r->max_records / 8 : slack)) return false;
  uint64_t written = __atomic_load_n(&h[2], RLX);  /* this thread's own count */
  uint64_t need = 8 + ((size + 7) & ~(uint64_t)7), pos = __atomic_load_n(&h[0], RLX);
  uint64_t offset = pos % r->cap, waste = offset + need > r->cap ? r->cap - offset : 0;
  uint64_t read = __atomic_load_n(&h[1], __ATOMIC_ACQUIRE);
  if (pos % 8 || need > r->cap || read > pos || pos - read + waste + need > r->cap) return false;
  uint8_t *at = r->base + RING_HEADER;
  if (waste) memset(at + offset, 0xff, 8), offset = 0;
  at += offset;
  memcpy(at, &size, 8), at += 8;
  for (size_t i = 0; i < nparts; i++)
    if (parts[i].len) copy_out(at, parts[i].p, parts[i].len), at += parts[i].len;
#if defined(__SSE2__)
  _mm_sfence();  /* streaming stores are weakly ordered: done before `write` says so */
#endif
  __atomic_store_n(&h[0], pos + waste + need, __ATOMIC_RELEASE);
  __atomic_store_n(&h[2], written + 1, __ATOMIC_RELEASE);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);  /* publish, then look at whether it sleeps */
  if (__atomic_load_n(&h[6], __ATOMIC_ACQUIRE)) {
    ssize_t ignored = write(r->fifo, "", 1);  /* O_NONBLOCK: a full pipe holds a wake-up */
    (void)ignored;
  }
  return true;
}

static unsigned bucket(const uint64_t *bounds, uint64_t n, uint64_t v) {
  unsigned i = 0;
  while (i < n && v > bounds[i]) i++;
  return i;
}

/* The 76 key bytes eight at a time (a byte-wise FNV-1a cost 300 instructions an exchange). */
static uint64_t key_hash(const uint8_t key[76]) {
  uint64_t h = 0xcbf29ce484222325ULL, w;
  uint32_t tail;
  for (size_t i = 0; i < 72; i += 8) {
    memcpy(&w, key + i, 8);
    h = (h ^ w) * 0x9e3779b97f4a7c15ULL, h ^= h >> 29;
  }
  memcpy(&tail, key + 72, 4);
  h = (h ^ tail) * 0x9e3779b97f4a7c15ULL;
  return h ^ (h >> 29);
}

/* The slot of key (bytes 16..92 of a slot: model, route, code, flags), inserted when absent
 * and the table has room (`limit` slots used); NULL when neither. */
static uint8_t *find_slot(const struct cfg *c, uint8_t *area, const uint8_t key[76], uint64_t limit) {
  uint64_t hash = key_hash(key), *used = word(area) + A_SLOTS_USED;
  for (uint64_t i = 0; i < c->slots; i++) {
    uint8_t *slot = area + AREA_HEADER + ((hash + i) % c->slots) * SLOT;
    if (!__atomic_load_n(word(slot), __ATOMIC_ACQUIRE)) {
      if (__atomic_load_n(used, RLX) >= limit) return NULL;
      memset(slot + 8, 0, SLOT - 8);
      memcpy(slot + 8, &hash, 8), memcpy(slot + 16, key, 76);
      __atomic_store_n(word(slot), 1, __ATOMIC_RELEASE);
      bump(used, 1);
      return slot;
    }
    if (*word(slot + 8) == hash && !memcmp(slot + 16, key, 76)) return slot;
  }
  return NULL;
}

static void count(struct stream *s, uint8_t *area, uint32_t code, uint32_t kflags,
                  uint64_t duration, uint64_t upstream, bool has_upstream, uint64_t end_real) {
  const struct cfg *c = s->c;
  uint8_t key[76] = {0};
  memcpy(key, s->model, strlen(s->model));
  memcpy(key + 64, &s->route, 4), memcpy(key + 68, &code, 4), memcpy(key + 72, &kflags, 4);
  uint8_t *slot = find_slot(c, area, key, c->slots - c->slots / 8);
  if (!slot && s->model[0]) {
    memset(key, 0, 64);  /* the table is 7/8 full: the `other` model */
    slot = find_slot(c, area, key, c->slots);
  }
  if (!slot) {
    bump(word(area) + A_UNRECORDED, 1);
    return;
  }
  uint64_t *w = word(slot);
  bump(&w[12], 1), bump(&w[13], duration), bump(&w[16], s->req_bytes), bump(&w[17], s->resp_bytes);
  bump(&w[18 + bucket(c->lat_bounds, c->nlat, duration)], 1);
  bump(&w[82 + bucket(c->byte_bounds, c->nbytes, s->req_bytes)], 1);
  bump(&w[114 + bucket(c->byte_bounds, c->nbytes, s->resp_bytes)], 1);
  if (has_upstream) {
    bump(&w[14], 1), bump(&w[15], upstream);
    bump(&w[50 + bucket(c->lat_bounds, c->nlat, upstream)], 1);
  }
  if (s->flags & F_SAMPLED) {
    memcpy(slot + 1168, s->trace, 16);
    __atomic_store_n(&w[148], duration, RLX), __atomic_store_n(&w[149], end_real, RLX);
    __atomic_store_n(&w[150], __atomic_load_n(&w[150], RLX) + 1, __ATOMIC_RELEASE);
  }
}

/* An exchange whose span the worker exports: sampled, or failed (a 5xx, a gRPC status
 * but OK: the worker keeps the server errors among them). */
static bool wants_span(const struct stream *s) {
  if (!(s->flags & F_TRACED)) return false;
  return (s->flags & F_SAMPLED) || s->status >= 500 ||
         ((s->flags & F_GRPC) && s->grpc_status > 0);
}

/* Once per stream: one record into the thread's rings and the counters. f is NULL when
 * Envoy's stream is gone (finished from the destroy hook): then nothing more is read. */
static void finish(struct stream *s, envoy_filter_envoy_ptr f) {
  const struct cfg *c = s->c;
  if (s->finished) return;
  s->finished = true;
  uint64_t end_mono = now(CLOCK_MONOTONIC), end_real = now(CLOCK_REALTIME);
  if (!tapping(c)) {
    __atomic_fetch_add(word(c->cnt) + 6, 1, RLX);
    return;
  }
  /* a skipped exchange's request headers only for a span of its own */
  if (f && !s->req_heads_done && (!s->skip || wants_span(s)))
    copy_map(s, f, ENVOY_REQUEST_HEADER, SEC_REQ_HEAD);
  uint8_t *area = c->cnt + CNT_HEADER + (uint64_t)my_thread * (AREA_HEADER + c->slots * SLOT);
  if (s->flags & F_GRPC) grpc_model(s);
  if (s->flags & F_REQ_PIECES) flush(s, SEC_REQ_BODY, F_REQ_TRUNC);
  if (s->flags & F_RESP_PIECES) flush(s, SEC_RESP_BODY, F_RESP_TRUNC);
  if (!s->got_response) s->flags |= F_NO_RESPONSE;
  bool local = s->flags & F_LOCAL, upstream = s->got_response && !local;
  uint64_t duration = end_mono - s->t0_mono;
  uint64_t up = upstream && s->resp_end > s->req_end ? s->resp_end - s->req_end : 0;

  uint8_t head[HEAD] = {0};
  uint32_t magic = REC_MAGIC, st = s->status;
  uint64_t fields[3] = {s->t0_real, duration, up};
  memcpy(head, &magic, 4), memcpy(head + 4, &s->flags, 4), memcpy(head + 8, fields, 24);
  memcpy(head + 32, &st, 4), memcpy(head + 36, &s->grpc_status, 4);
  memcpy(head + 40, &s->req_bytes, 8), memcpy(head + 48, &s->resp_bytes, 8);
  memcpy(head + 56, &s->id, 8);
  memcpy(head + 64, s->trace, 16), memcpy(head + 80, s->span, 8), memcpy(head + 88, s->parent, 8);
  struct part parts[7] = {{head, sizeof head}};
  uint64_t size = sizeof head;
  for (int i = 0; i < 6; i++) {
    uint32_t len = (uint32_t)s->sec[i].len;
    memcpy(head + 96 + 4 * i, &len, 4);
    parts[i + 1] = (struct part){s->sec[i].p, s->sec[i].len}, size += len;
  }
  bool sent = !s->skip && put(s, parts, 7, size, false);
  uint64_t *a = word(area);
  bump(&a[sent ? A_RECORDS : A_RING_FULL], 1);
  if (!sent && wants_span(s)) {
    /* its span only: the head and the request's headers, in a reserve of an eighth of the
     * ring's records that whole records never use, so a worker that is behind still
     * sees every sampled or failed exchange's span (PROTOCOL.md, "Trace context") */
    uint32_t flags = s->flags | F_SPAN_ONLY;
    memcpy(head + 4, &flags, 4), memset(head + 100, 0, 20);
    bump(&a[A_SPANS_ONLY], put(s, parts, 2, sizeof head + s->sec[SEC_REQ_HEAD].len, true));
  }
  bump(&a[A_TRUNC_BUDGET], s->budget_trunc), bump(&a[A_TRUNC_BODY], s->body_truncs);
  bump(&a[A_EXCHANGES], 1);
  /* counters' flags: 1 gRPC, 2 local reply, 4 no response; code: the HTTP status, or for
   * gRPC the grpc-status number (GRPC_NONE when the answer carried none) */
  uint32_t kflags = (s->flags & F_GRPC ? 1 : 0) | (local ? 2 : 0) | (s->got_response ? 0 : 4);
  uint32_t code = !(s->flags & F_GRPC) ? s->status
                  : s->grpc_status >= 0 ? (uint32_t)s->grpc_status
                  : s->got_response ? UINT32_MAX : 0;
  count(s, area, code, kflags, duration, up, upstream, end_real);
}

void envoy_dynamic_module_on_http_filter_stream_complete(envoy_filter_envoy_ptr f,
                                                         envoy_filter_module_ptr m) {
  if (m) finish((struct stream *)m, f);
}

/* Envoy 1.40 calls stream_complete before destroy; should it ever not, destroy still
 * finishes the exchange (with what was copied so far), so the counters stay exact. */
void envoy_dynamic_module_on_http_filter_destroy(envoy_filter_module_ptr m) {
  struct stream *s = (struct stream *)m;
  if (!s) return;
  finish(s, NULL);
  for (int i = 0; i < 6; i++) release(s, &s->sec[i]);
  free(s->gp);
  free(s);
}

/* ---------------------------------------------------------------- hooks the tap does not use */
#include "unused_hooks.h"
const void *envoy_dynamic_module_on_http_filter_per_route_config_new(B name, B config) {
  tap_log(ENVOY_LOG_ERROR, "refused: the tap has no per-route configuration");
  return NULL;
}
