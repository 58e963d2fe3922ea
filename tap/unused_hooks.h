/* The hooks Envoy 1.40 requires of every HTTP filter module that lookout's modules leave
 * empty (callouts, streams of their own, scheduling, watermarks): one list, for the tap
 * and for the bench's floor module (bench/floor_module.c). Each module defines its own
 * per-route configuration hooks. Unused parameters are not warned of from its inclusion on. */
#ifndef LOOKOUT_UNUSED_HOOKS_H
#define LOOKOUT_UNUSED_HOOKS_H

#include "envoy_abi.h"

#pragma GCC diagnostic ignored "-Wunused-parameter"
typedef envoy_filter_envoy_ptr F;
typedef envoy_filter_module_ptr M;
typedef envoy_dynamic_module_type_envoy_http_header H;
typedef envoy_dynamic_module_type_envoy_buffer B;
void envoy_dynamic_module_on_http_filter_per_route_config_destroy(const void *c) {}
void envoy_dynamic_module_on_http_filter_http_callout_done(F f, M m, uint64_t id, int result, H *h,
                                                           size_t nh, B *b, size_t nb) {}
void envoy_dynamic_module_on_http_filter_http_stream_headers(F f, M m, uint64_t id, H *h, size_t n,
                                                             bool eos) {}
void envoy_dynamic_module_on_http_filter_http_stream_data(F f, M m, uint64_t id, const B *d, size_t n,
                                                          bool eos) {}
void envoy_dynamic_module_on_http_filter_http_stream_trailers(F f, M m, uint64_t id, H *t, size_t n) {}
void envoy_dynamic_module_on_http_filter_http_stream_complete(F f, M m, uint64_t id) {}
void envoy_dynamic_module_on_http_filter_http_stream_reset(F f, M m, uint64_t id, int reason) {}
void envoy_dynamic_module_on_http_filter_scheduled(F f, M m, uint64_t id) {}
void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(F f, M m) {}
void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(F f, M m) {}

#endif
