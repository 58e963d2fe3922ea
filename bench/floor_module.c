/* The least an observing dynamic module costs Envoy: every hook the ABI requires, each
 * returning at once, plus what any tap of the exchange must ask Envoy for: the request's
 * and the response's header lists, and a `traceparent` added to the request. Nothing is
 * kept or copied. bench/envoy_parts.py builds it with gcc and loads it in the tap's place
 * (variants "pass-through module" and "floor: headers read and traceparent added"), so
 * what the tap costs above what no such module could avoid is read off the same run.
 * Never shipped. */
#include <string.h>

#include "unused_hooks.h"

typedef envoy_dynamic_module_type_module_buffer MB;

static int reads; /* the configuration: "headers" reads and adds, anything else nothing */

const char *envoy_dynamic_module_on_program_init(void) { return LOOKOUT_TAP_ABI; }

envoy_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_filter_config_envoy_ptr envoy, B name, B config) {
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
  if (!reads) return ENVOY_CONTINUE;
  list(f, ENVOY_REQUEST_HEADER);
  envoy_dynamic_module_callback_http_add_header(f, ENVOY_REQUEST_HEADER, (MB){"traceparent", 11},
                                                (MB){value, sizeof value - 1});
  return ENVOY_CONTINUE;
}

int envoy_dynamic_module_on_http_filter_response_headers(F f, M m, bool eos) {
  if (reads) list(f, ENVOY_RESPONSE_HEADER);
  return ENVOY_CONTINUE;
}

void envoy_dynamic_module_on_http_filter_config_destroy(envoy_filter_config_module_ptr c) {}
const void *envoy_dynamic_module_on_http_filter_per_route_config_new(B name, B config) { return NULL; }
M envoy_dynamic_module_on_http_filter_new(envoy_filter_config_module_ptr c, F f) { return c; }
void envoy_dynamic_module_on_http_filter_destroy(M m) {}
int envoy_dynamic_module_on_http_filter_request_body(F f, M m, bool eos) { return ENVOY_CONTINUE; }
int envoy_dynamic_module_on_http_filter_request_trailers(F f, M m) { return ENVOY_CONTINUE; }
int envoy_dynamic_module_on_http_filter_response_body(F f, M m, bool eos) { return ENVOY_CONTINUE; }
int envoy_dynamic_module_on_http_filter_response_trailers(F f, M m) { return ENVOY_CONTINUE; }
void envoy_dynamic_module_on_http_filter_stream_complete(F f, M m) {}
