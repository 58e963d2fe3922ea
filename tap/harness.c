/* tap_harness: a fake Envoy for lookout_tap.c. It implements exactly the callbacks the tap
 * uses (envoy_abi.h), feeds the hooks from a test-case file, and is built with
 * -fsanitize=address,undefined. The shared memory is made beforehand (tap/tapshm.py).
 *
 *   tap_harness CONFIG_FILE CASE_FILE
 *
 * CONFIG_FILE holds the filter configuration text as Envoy would pass it. CASE_FILE is lines
 * of whitespace-separated words; every byte string is hex ("-" is empty). Streams are numbered
 * 0..255 and may interleave; each line addresses one:
 *   ID new                    on_http_filter_new
 *   ID hdr T NAME VALUE       add a header to map T (0 request headers, 1 request trailers,
 *                             2 response headers, 3 response trailers)
 *   ID big T NAME BYTE COUNT  add a header whose value is COUNT bytes BYTE (hex, 2 digits)
 *   ID reqh EOS | resph EOS   request / response headers hook (EOS 0 or 1)
 *   ID reqt | respt           request / response trailers hook
 *   ID body D EOS CHUNK...    a received body (D 0 request, 2 response) in chunks, each
 *                             HEX or rep:BYTE:COUNT; then the request / response body hook
 *   ID complete               stream_complete hook
 *   ID destroy                destroy hook (without complete: a missing hook)
 *   ID nullhooks              every hook once with a NULL module pointer
 * At the end every stream still alive gets complete (unless it said `skip`) and destroy,
 * the config is destroyed, and the harness prints `streams N`. Exit 0 unless a hook refused
 * the configuration (exit 2) or the file is malformed (exit 3). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy_abi.h"

struct hdr { char *k, *v; size_t kl, vl; };
struct map { struct hdr *h; size_t n; };
struct fake {
  struct map maps[4];
  envoy_dynamic_module_type_envoy_buffer *chunks;
  size_t nchunks;
  int body_type;
  envoy_filter_module_ptr mod;
  int alive, skip_complete;
};
static struct fake streams[256];
static void add(struct map *m, char *k, size_t kl, char *v, size_t vl);

void envoy_dynamic_module_callback_log(int level, envoy_dynamic_module_type_module_buffer msg) {
  fprintf(stderr, "[tap %d] %.*s\n", level, (int)msg.length, msg.ptr);
}

static struct map *map_of(envoy_filter_envoy_ptr f, int type) {
  return type >= 0 && type < 4 ? &((struct fake *)f)->maps[type] : NULL;
}

size_t envoy_dynamic_module_callback_http_get_headers_size(envoy_filter_envoy_ptr f, int type) {
  struct map *m = map_of(f, type);
  return m ? m->n : 0;
}

bool envoy_dynamic_module_callback_http_get_headers(envoy_filter_envoy_ptr f, int type,
                                                    envoy_dynamic_module_type_envoy_http_header *out) {
  struct map *m = map_of(f, type);
  if (!m) return false;
  for (size_t i = 0; i < m->n; i++)
    out[i] = (envoy_dynamic_module_type_envoy_http_header){m->h[i].k, m->h[i].kl, m->h[i].v, m->h[i].vl};
  return true;
}

/* Envoy's setHeaderValueImpl: every value of the key replaced by one (the first kept). */
bool envoy_dynamic_module_callback_http_set_header(envoy_filter_envoy_ptr f, int type,
                                                   envoy_dynamic_module_type_module_buffer key,
                                                   envoy_dynamic_module_type_module_buffer value) {
  struct map *m = map_of(f, type);
  if (!m || !key.ptr || !value.ptr) return false;
  char *v = malloc(value.length + 1);
  if (!v) return false;
  memcpy(v, value.ptr, value.length);
  for (size_t i = 0; i < m->n; i++)
    if (m->h[i].kl == key.length && !memcmp(m->h[i].k, key.ptr, key.length)) {
      free(m->h[i].v);
      m->h[i].v = v, m->h[i].vl = value.length;
      for (size_t j = m->n; j-- > i + 1;)
        if (m->h[j].kl == key.length && !memcmp(m->h[j].k, key.ptr, key.length)) {
          free(m->h[j].k), free(m->h[j].v);
          memmove(&m->h[j], &m->h[j + 1], (m->n - j - 1) * sizeof *m->h), m->n--;
        }
      return true;
    }
  char *k = malloc(key.length + 1);
  if (!k) return free(v), false;
  memcpy(k, key.ptr, key.length);
  add(m, k, key.length, v, value.length);
  return true;
}

/* Envoy's addCopy: one more entry, whatever the key already has. */
bool envoy_dynamic_module_callback_http_add_header(envoy_filter_envoy_ptr f, int type,
                                                   envoy_dynamic_module_type_module_buffer key,
                                                   envoy_dynamic_module_type_module_buffer value) {
  struct map *m = map_of(f, type);
  if (!m || !key.ptr || !value.ptr) return false;
  char *k = malloc(key.length + 1), *v = malloc(value.length + 1);
  if (!k || !v) return free(k), free(v), false;
  memcpy(k, key.ptr, key.length), memcpy(v, value.ptr, value.length);
  add(m, k, key.length, v, value.length);
  return true;
}

size_t envoy_dynamic_module_callback_http_get_body_chunks_size(envoy_filter_envoy_ptr f, int type) {
  struct fake *s = f;
  return type == s->body_type ? s->nchunks : 0;
}

bool envoy_dynamic_module_callback_http_get_body_chunks(envoy_filter_envoy_ptr f, int type,
                                                        envoy_dynamic_module_type_envoy_buffer *out) {
  struct fake *s = f;
  if (type != s->body_type) return false;
  memcpy(out, s->chunks, s->nchunks * sizeof *out);
  return true;
}

size_t envoy_dynamic_module_callback_http_get_body_size(envoy_filter_envoy_ptr f, int type) {
  struct fake *s = f;
  size_t total = 0;
  for (size_t i = 0; type == s->body_type && i < s->nchunks; i++) total += s->chunks[i].length;
  return total;
}

static void die(int code, const char *why, size_t line) {
  fprintf(stderr, "tap_harness: %s (line %zu)\n", why, line);
  exit(code);
}

static char *unhex(const char *h, size_t *n, size_t line) {
  size_t len = strcmp(h, "-") ? strlen(h) : 0;
  char *out = malloc(len / 2 + 1);
  if (len % 2 || !out) die(3, "bad hex", line);
  for (size_t i = 0; i < len / 2; i++) {
    unsigned b;
    if (sscanf(h + 2 * i, "%2x", &b) != 1) die(3, "bad hex", line);
    out[i] = (char)b;
  }
  *n = len / 2;
  return out;
}

static void add(struct map *m, char *k, size_t kl, char *v, size_t vl) {
  m->h = realloc(m->h, (m->n + 1) * sizeof *m->h);
  if (!m->h) die(3, "out of memory", 0);
  m->h[m->n++] = (struct hdr){k, v, kl, vl};
}

static void clear_chunks(struct fake *s) {
  for (size_t i = 0; i < s->nchunks; i++) free((void *)s->chunks[i].ptr);
  free(s->chunks);
  s->chunks = NULL, s->nchunks = 0, s->body_type = -1;
}

static void end_stream(struct fake *s, int complete) {
  if (!s->alive) return;
  if (complete) envoy_dynamic_module_on_http_filter_stream_complete(s, s->mod);
  envoy_dynamic_module_on_http_filter_destroy(s->mod);
  for (int t = 0; t < 4; t++) {
    for (size_t i = 0; i < s->maps[t].n; i++) free(s->maps[t].h[i].k), free(s->maps[t].h[i].v);
    free(s->maps[t].h);
  }
  clear_chunks(s);
  memset(s, 0, sizeof *s);
}

static void null_hooks(struct fake *s) {
  envoy_dynamic_module_on_http_filter_request_headers(s, NULL, true);
  envoy_dynamic_module_on_http_filter_request_body(s, NULL, true);
  envoy_dynamic_module_on_http_filter_request_trailers(s, NULL);
  envoy_dynamic_module_on_http_filter_response_headers(s, NULL, true);
  envoy_dynamic_module_on_http_filter_response_body(s, NULL, true);
  envoy_dynamic_module_on_http_filter_response_trailers(s, NULL);
  envoy_dynamic_module_on_http_filter_stream_complete(s, NULL);
  envoy_dynamic_module_on_http_filter_destroy(NULL);
}

int main(int argc, char **argv) {
  if (argc != 3) die(3, "usage: tap_harness CONFIG_FILE CASE_FILE", 0);
  FILE *cf = fopen(argv[1], "rb"), *in = fopen(argv[2], "r");
  if (!cf || !in) die(3, "cannot open the files", 0);
  static char conf[1 << 20];
  size_t conf_len = fread(conf, 1, sizeof conf, cf);
  fclose(cf);
  if (strcmp(envoy_dynamic_module_on_program_init(), "v0.2.0")) die(2, "ABI version", 0);
  envoy_filter_config_module_ptr cfg = envoy_dynamic_module_on_http_filter_config_new(
      NULL, (envoy_dynamic_module_type_envoy_buffer){"lookout_tap", 11},
      (envoy_dynamic_module_type_envoy_buffer){conf, conf_len});
  if (!cfg) die(2, "configuration refused", 0);
  size_t made = 0, lineno = 0, cap = 1 << 16;
  char *line = malloc(cap);
  while (line && fgets(line, (int)cap, in)) {
    lineno++;
    while (!strchr(line, '\n') && !feof(in)) {  /* lines may be huge: grow */
      line = realloc(line, cap * 2);
      if (!line || !fgets(line + cap - 1, (int)cap + 1, in)) break;
      cap *= 2;
    }
    char *save = NULL, *w = strtok_r(line, " \t\r\n", &save), *cmd = strtok_r(NULL, " \t\r\n", &save);
    if (!w) continue;
    int id = atoi(w);
    if (id < 0 || id > 255 || !cmd) die(3, "bad stream id or command", lineno);
    struct fake *s = &streams[id];
#define ARG() (strtok_r(NULL, " \t\r\n", &save) ?: (die(3, "missing argument", lineno), ""))
    if (!strcmp(cmd, "new")) {
      end_stream(s, 1);
      s->body_type = -1;
      s->mod = envoy_dynamic_module_on_http_filter_new(cfg, s);
      if (!s->mod) die(3, "filter_new returned NULL", lineno);
      s->alive = 1, made++;
      continue;
    }
    if (!s->alive) die(3, "no such stream", lineno);
    if (!strcmp(cmd, "hdr") || !strcmp(cmd, "big")) {
      int t = atoi(ARG());
      size_t kl, vl;
      char *k = unhex(ARG(), &kl, lineno), *v;
      if (t < 0 || t > 3) die(3, "bad header map", lineno);
      if (!strcmp(cmd, "hdr")) v = unhex(ARG(), &vl, lineno);
      else {
        int b = (int)strtol(ARG(), NULL, 16);
        vl = strtoull(ARG(), NULL, 10);
        if (!(v = malloc(vl + 1))) die(3, "out of memory", lineno);
        memset(v, b, vl);
      }
      add(&s->maps[t], k, kl, v, vl);
    } else if (!strcmp(cmd, "reqh")) {
      envoy_dynamic_module_on_http_filter_request_headers(s, s->mod, atoi(ARG()));
    } else if (!strcmp(cmd, "resph")) {
      envoy_dynamic_module_on_http_filter_response_headers(s, s->mod, atoi(ARG()));
    } else if (!strcmp(cmd, "reqt")) {
      envoy_dynamic_module_on_http_filter_request_trailers(s, s->mod);
    } else if (!strcmp(cmd, "respt")) {
      envoy_dynamic_module_on_http_filter_response_trailers(s, s->mod);
    } else if (!strcmp(cmd, "body")) {
      int d = atoi(ARG()), eos = atoi(ARG());
      clear_chunks(s);
      for (char *c; (c = strtok_r(NULL, " \t\r\n", &save));) {
        size_t n;
        char *p;
        if (!strncmp(c, "rep:", 4)) {
          char *colon = strchr(c + 4, ':');
          if (!colon) die(3, "bad rep chunk", lineno);
          n = strtoull(colon + 1, NULL, 10);
          if (!(p = malloc(n + 1))) die(3, "out of memory", lineno);
          memset(p, (int)strtol(c + 4, NULL, 16), n);
        } else {
          p = unhex(c, &n, lineno);
        }
        s->chunks = realloc(s->chunks, (s->nchunks + 1) * sizeof *s->chunks);
        if (!s->chunks) die(3, "out of memory", lineno);
        s->chunks[s->nchunks++] = (envoy_dynamic_module_type_envoy_buffer){p, n};
      }
      s->body_type = d == 2 ? 2 : 0;
      if (d == 2) envoy_dynamic_module_on_http_filter_response_body(s, s->mod, eos);
      else envoy_dynamic_module_on_http_filter_request_body(s, s->mod, eos);
      clear_chunks(s);
    } else if (!strcmp(cmd, "complete")) {
      envoy_dynamic_module_on_http_filter_stream_complete(s, s->mod);
    } else if (!strcmp(cmd, "skip")) {
      s->skip_complete = 1;
    } else if (!strcmp(cmd, "destroy")) {
      end_stream(s, 0);
    } else if (!strcmp(cmd, "nullhooks")) {
      null_hooks(s);
    } else {
      die(3, "unknown command", lineno);
    }
  }
  free(line);
  fclose(in);
  for (int i = 0; i < 256; i++) end_stream(&streams[i], !streams[i].skip_complete);
  envoy_dynamic_module_on_http_filter_config_destroy(cfg);
  printf("streams %zu\n", made);
  return 0;
}
