/* The slice of Envoy's dynamic-module ABI that the tap uses: lookout's own declarations,
 * pinned to Envoy 1.40.0 (commit 9e5580933739775e8bce696a57a2e1bc99368f23, ABI "v0.2.0").
 *
 * Written from Envoy's source/extensions/dynamic_modules/abi/abi.h (a stored version near
 * 1.40) and checked against the 1.40.0 binary (`nm -D` for the exported callbacks,
 * `objdump -d` for the argument registers each one reads, SysV x86-64 ABI):
 *   callback_log                   edi=level, rsi:rdx=buffer{ptr,len}        -> void
 *   callback_http_get_headers_size rdi, esi=type (2 args)                    -> size_t
 *   callback_http_get_headers      rdi, esi=type, rdx=array*                 -> bool
 *   callback_http_get_body_chunks_size rdi, esi=type (2 args; returns the slice count
 *                                  in rax, no out-pointer)                   -> size_t
 *   callback_http_get_body_chunks  rdi, esi=type, rdx=array*                 -> bool
 *   callback_http_set_header       rdi, esi=type, rdx:rcx=key, r8:r9=value     -> bool
 *   callback_http_add_header       rdi, esi=type, rdx:rcx=key, r8:r9=value     -> bool
 *   callback_http_get_body_size    rdi, esi=type (2 args; the buffer's length()
 *                                  in rax; the same jump table as chunks_size) -> size_t
 * Enum orders were checked on the jump tables of those callbacks: header types
 * 0 request headers, 1 request trailers, 2 response headers, 3 response trailers; body types
 * 0 received request, 1 buffered request, 2 received response, 3 buffered response.
 * The hook names are the `envoy_dynamic_module_on_http_filter_*` strings in the binary; hook
 * argument lists are from abi.h (Envoy calls them, so they cannot be read from its code).
 *
 * Every callback is declared weak: the module then loads where they are absent (Python's
 * ctypes reading lookout_tap_abi_version, the harness), and the config hook refuses to
 * start when one is missing instead of crashing. */
#ifndef LOOKOUT_ENVOY_ABI_H
#define LOOKOUT_ENVOY_ABI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct { const char *ptr; size_t length; } envoy_dynamic_module_type_envoy_buffer;
typedef struct { const char *ptr; size_t length; } envoy_dynamic_module_type_module_buffer;
typedef struct {
  const char *key_ptr;
  size_t key_length;
  const char *value_ptr;
  size_t value_length;
} envoy_dynamic_module_type_envoy_http_header;

enum { ENVOY_REQUEST_HEADER = 0, ENVOY_REQUEST_TRAILER = 1, ENVOY_RESPONSE_HEADER = 2,
       ENVOY_RESPONSE_TRAILER = 3 };
enum { ENVOY_RECEIVED_REQUEST_BODY = 0, ENVOY_RECEIVED_RESPONSE_BODY = 2 };
enum { ENVOY_LOG_INFO = 2, ENVOY_LOG_ERROR = 4 };
/* Every *_status enum's first value is Continue (0); the tap returns nothing else. */
#define ENVOY_CONTINUE 0

typedef void *envoy_filter_config_envoy_ptr;
typedef const void *envoy_filter_config_module_ptr;
typedef void *envoy_filter_envoy_ptr;
typedef const void *envoy_filter_module_ptr;

/* Callbacks (Envoy implements them). */
/* The ABI Envoy 1.40.0 expects; `make wrongabi` builds a tap that claims another. */
#ifndef LOOKOUT_TAP_ABI
#define LOOKOUT_TAP_ABI "v0.2.0"
#endif

#define WEAK __attribute__((weak))
WEAK void envoy_dynamic_module_callback_log(int level, envoy_dynamic_module_type_module_buffer msg);
WEAK size_t envoy_dynamic_module_callback_http_get_headers_size(envoy_filter_envoy_ptr f,
                                                                int header_type);
WEAK bool envoy_dynamic_module_callback_http_get_headers(
    envoy_filter_envoy_ptr f, int header_type, envoy_dynamic_module_type_envoy_http_header *out);
WEAK size_t envoy_dynamic_module_callback_http_get_body_chunks_size(envoy_filter_envoy_ptr f,
                                                                    int body_type);
WEAK bool envoy_dynamic_module_callback_http_get_body_chunks(
    envoy_filter_envoy_ptr f, int body_type, envoy_dynamic_module_type_envoy_buffer *out);
/* rdi, esi=type, rdx:rcx=key{ptr,len}, r8:r9=value{ptr,len} (checked by disassembly) */
WEAK bool envoy_dynamic_module_callback_http_set_header(
    envoy_filter_envoy_ptr f, int header_type, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value);
/* The same arguments (checked by disassembly); optional: the tap sets where it is absent. */
WEAK bool envoy_dynamic_module_callback_http_add_header(
    envoy_filter_envoy_ptr f, int header_type, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value);
/* Optional: without it a body's length is summed from its chunks. */
WEAK size_t envoy_dynamic_module_callback_http_get_body_size(envoy_filter_envoy_ptr f,
                                                             int body_type);
#undef WEAK

/* Hooks (the module implements them; 1.40.0 refuses the filter when one is missing). */
#define HOOK __attribute__((visibility("default")))
HOOK const char *envoy_dynamic_module_on_program_init(void);
HOOK envoy_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_filter_config_envoy_ptr cfg, envoy_dynamic_module_type_envoy_buffer name,
    envoy_dynamic_module_type_envoy_buffer config);
HOOK void envoy_dynamic_module_on_http_filter_config_destroy(envoy_filter_config_module_ptr cfg);
HOOK const void *envoy_dynamic_module_on_http_filter_per_route_config_new(
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config);
HOOK void envoy_dynamic_module_on_http_filter_per_route_config_destroy(const void *cfg);
HOOK envoy_filter_module_ptr envoy_dynamic_module_on_http_filter_new(
    envoy_filter_config_module_ptr cfg, envoy_filter_envoy_ptr f);
HOOK void envoy_dynamic_module_on_http_filter_destroy(envoy_filter_module_ptr m);
HOOK int envoy_dynamic_module_on_http_filter_request_headers(envoy_filter_envoy_ptr f,
                                                             envoy_filter_module_ptr m, bool eos);
HOOK int envoy_dynamic_module_on_http_filter_request_body(envoy_filter_envoy_ptr f,
                                                          envoy_filter_module_ptr m, bool eos);
HOOK int envoy_dynamic_module_on_http_filter_request_trailers(envoy_filter_envoy_ptr f,
                                                              envoy_filter_module_ptr m);
HOOK int envoy_dynamic_module_on_http_filter_response_headers(envoy_filter_envoy_ptr f,
                                                              envoy_filter_module_ptr m, bool eos);
HOOK int envoy_dynamic_module_on_http_filter_response_body(envoy_filter_envoy_ptr f,
                                                           envoy_filter_module_ptr m, bool eos);
HOOK int envoy_dynamic_module_on_http_filter_response_trailers(envoy_filter_envoy_ptr f,
                                                               envoy_filter_module_ptr m);
HOOK void envoy_dynamic_module_on_http_filter_stream_complete(envoy_filter_envoy_ptr f,
                                                              envoy_filter_module_ptr m);
/* Required by 1.40.0 but unused by the tap (callouts, scheduling, watermarks): no-ops. */
HOOK void envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy_filter_envoy_ptr f, envoy_filter_module_ptr m, uint64_t id, int result,
    envoy_dynamic_module_type_envoy_http_header *headers, size_t n_headers,
    envoy_dynamic_module_type_envoy_buffer *chunks, size_t n_chunks);
HOOK void envoy_dynamic_module_on_http_filter_http_stream_headers(
    envoy_filter_envoy_ptr f, envoy_filter_module_ptr m, uint64_t id,
    envoy_dynamic_module_type_envoy_http_header *headers, size_t n, bool eos);
HOOK void envoy_dynamic_module_on_http_filter_http_stream_data(
    envoy_filter_envoy_ptr f, envoy_filter_module_ptr m, uint64_t id,
    const envoy_dynamic_module_type_envoy_buffer *data, size_t n, bool eos);
HOOK void envoy_dynamic_module_on_http_filter_http_stream_trailers(
    envoy_filter_envoy_ptr f, envoy_filter_module_ptr m, uint64_t id,
    envoy_dynamic_module_type_envoy_http_header *trailers, size_t n);
HOOK void envoy_dynamic_module_on_http_filter_http_stream_complete(
    envoy_filter_envoy_ptr f, envoy_filter_module_ptr m, uint64_t id);
HOOK void envoy_dynamic_module_on_http_filter_http_stream_reset(
    envoy_filter_envoy_ptr f, envoy_filter_module_ptr m, uint64_t id, int reason);
HOOK void envoy_dynamic_module_on_http_filter_scheduled(envoy_filter_envoy_ptr f,
                                                        envoy_filter_module_ptr m, uint64_t id);
HOOK void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    envoy_filter_envoy_ptr f, envoy_filter_module_ptr m);
HOOK void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    envoy_filter_envoy_ptr f, envoy_filter_module_ptr m);
#undef HOOK

#endif
