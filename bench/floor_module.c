/* The least an observing dynamic module costs Envoy: every hook the ABI requires, each
 * returning at once, plus what any tap of the exchange must ask Envoy for: the request's
 * and the response's header lists, and a `traceparent` added to the request. Nothing is
 * kept or copied. bench/envoy_parts.py builds it with gcc and loads it in the tap's place
 * (variants "pass-through module" and "floor: headers read and traceparent added"), so
 * what the tap costs above what no such module could avoid is read off the same run.
 * Never shipped. */
#include <string.h>

#include "envoy_abi.h"

typedef envoy_filter_envoy_ptr F;
typedef envoy_filter_module_ptr M;
typedef envoy_dynamic_module_type_envoy_http_header H;
typedef envoy_dynamic_module_type_envoy_buffer B;
typedef envoy_dynamic_module_type_module_buffer MB;

static int reads; /* the configuration: "headers" reads and adds, anything else nothing */

const char *envoy_dynamic_module_on_program_init(void) { return LOOKOUT_TAP_ABI; }

envoy_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_filter_config_envoy_ptr envoy, B name, B config) {
  (void)envoy, (void)name;
  reads = config.length == 7 && !memcmp(config.ptr, "headers", 7);
  return &reads;
}

static void list(F f, int type) {
  H local[64];
  size_t n = envoy_dynamic_module_callback_http_get_headers_size(f, type);
  if (n <= 64) envoy_dynamic_module_callback_http_get_headers(f, type, local);
}

int envoy_dynamic_module_on_http_filter_request_headers(F f, M m, bool eos) {
  static const char value[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
  (void)m, (void)eos;
  if (!reads) return ENVOY_CONTINUE;
  list(f, ENVOY_REQUEST_HEADER);
  envoy_dynamic_module_callback_http_add_header(f, ENVOY_REQUEST_HEADER, (MB){"traceparent", 11},
                                                (MB){value, sizeof value - 1});
  return ENVOY_CONTINUE;
}

int envoy_dynamic_module_on_http_filter_response_headers(F f, M m, bool eos) {
  (void)m, (void)eos;
  if (reads) list(f, ENVOY_RESPONSE_HEADER);
  return ENVOY_CONTINUE;
}

void envoy_dynamic_module_on_http_filter_config_destroy(envoy_filter_config_module_ptr c) { (void)c; }
const void *envoy_dynamic_module_on_http_filter_per_route_config_new(B name, B config) {
  (void)name, (void)config;
  return NULL;
}
void envoy_dynamic_module_on_http_filter_per_route_config_destroy(const void *c) { (void)c; }
M envoy_dynamic_module_on_http_filter_new(envoy_filter_config_module_ptr c, F f) {
  (void)f;
  return c;
}
void envoy_dynamic_module_on_http_filter_destroy(M m) { (void)m; }
int envoy_dynamic_module_on_http_filter_request_body(F f, M m, bool eos) {
  (void)f, (void)m, (void)eos;
  return ENVOY_CONTINUE;
}
int envoy_dynamic_module_on_http_filter_request_trailers(F f, M m) {
  (void)f, (void)m;
  return ENVOY_CONTINUE;
}
int envoy_dynamic_module_on_http_filter_response_body(F f, M m, bool eos) {
  (void)f, (void)m, (void)eos;
  return ENVOY_CONTINUE;
}
int envoy_dynamic_module_on_http_filter_response_trailers(F f, M m) {
  (void)f, (void)m;
  return ENVOY_CONTINUE;
}
void envoy_dynamic_module_on_http_filter_stream_complete(F f, M m) { (void)f, (void)m; }
void envoy_dynamic_module_on_http_filter_http_callout_done(F f, M m, uint64_t id, int result,
                                                           H *h, size_t nh, B *c, size_t nc) {
  (void)f, (void)m, (void)id, (void)result, (void)h, (void)nh, (void)c, (void)nc;
}
void envoy_dynamic_module_on_http_filter_http_stream_headers(F f, M m, uint64_t id, H *h, size_t n,
                                                             bool eos) {
  (void)f, (void)m, (void)id, (void)h, (void)n, (void)eos;
}
void envoy_dynamic_module_on_http_filter_http_stream_data(F f, M m, uint64_t id, const B *d,
                                                          size_t n, bool eos) {
  (void)f, (void)m, (void)id, (void)d, (void)n, (void)eos;
}
void envoy_dynamic_module_on_http_filter_http_stream_trailers(F f, M m, uint64_t id, H *t,
                                                              size_t n) {
  (void)f, (void)m, (void)id, (void)t, (void)n;
}
void envoy_dynamic_module_on_http_filter_http_stream_complete(F f, M m, uint64_t id) {
  (void)f, (void)m, (void)id;
}
void envoy_dynamic_module_on_http_filter_http_stream_reset(F f, M m, uint64_t id, int reason) {
  (void)f, (void)m, (void)id, (void)reason;
}
void envoy_dynamic_module_on_http_filter_scheduled(F f, M m, uint64_t id) {
  (void)f, (void)m, (void)id;
}
void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(F f, M m) {
  (void)f, (void)m;
}
void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(F f, M m) {
  (void)f, (void)m;
}
