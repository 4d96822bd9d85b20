/* wasi_nn.h: the WASI-NN imports (module `wasi_ephemeral_nn`, witx ABI) for C guests.
 *
 * Every function returns a wasi_nn_errno_t; 0 is success. Pointers are into the guest's own
 * linear memory; the host checks every one of them.
 */
#ifndef WASMINFER_WASI_NN_H
#define WASMINFER_WASI_NN_H

#include <stdint.h>

typedef uint32_t wasi_nn_graph_t;
typedef uint32_t wasi_nn_context_t;
typedef int32_t wasi_nn_errno_t;

enum {
    WASI_NN_SUCCESS = 0,
    WASI_NN_INVALID_ARGUMENT = 1,
    WASI_NN_INVALID_ENCODING = 2,
    WASI_NN_MISSING_MEMORY = 3,
    WASI_NN_BUSY = 4,
    WASI_NN_RUNTIME_ERROR = 5,
    WASI_NN_UNSUPPORTED_OPERATION = 6,
    WASI_NN_TOO_LARGE = 7,
    WASI_NN_NOT_FOUND = 8,
};

enum { WASI_NN_ENCODING_OPENVINO = 0, WASI_NN_ENCODING_ONNX = 1, WASI_NN_ENCODING_AUTODETECT = 5, WASI_NN_ENCODING_GGML = 6 };
/* TPU is served on an NPU where the runtime has one; AUTO (a WasmEdge addition) lets the backend choose. */
enum { WASI_NN_TARGET_CPU = 0, WASI_NN_TARGET_GPU = 1, WASI_NN_TARGET_TPU = 2, WASI_NN_TARGET_AUTO = 3 };

/* Tensor element types in the wasmtime/witx numbering (wasi-nn crate 0.6). The host also
 * accepts the older numbering (f16 0, f32 1, u8 2, i32 3) and tells them apart by data length. */
enum {
    WASI_NN_TYPE_F16 = 0,
    WASI_NN_TYPE_F32 = 1,
    WASI_NN_TYPE_F64 = 2,
    WASI_NN_TYPE_U8 = 3,
    WASI_NN_TYPE_I32 = 4,
    WASI_NN_TYPE_I64 = 5,
};

typedef struct {
    const uint8_t *buf;
    uint32_t len;
} wasi_nn_graph_builder_t;

/* 20 bytes, the layout the host reads: the type is one byte followed by padding. */
typedef struct {
    const uint32_t *dims;
    uint32_t dims_len;
    uint8_t type;
    const uint8_t *data;
    uint32_t data_len; /* bytes */
} wasi_nn_tensor_t;

#define WASI_NN_IMPORT(name) __attribute__((import_module("wasi_ephemeral_nn"), import_name(name)))

WASI_NN_IMPORT("load")
wasi_nn_errno_t wasi_nn_load(const wasi_nn_graph_builder_t *builders, uint32_t builders_len, uint32_t encoding,
                             uint32_t target, wasi_nn_graph_t *graph);

WASI_NN_IMPORT("load_by_name")
wasi_nn_errno_t wasi_nn_load_by_name(const char *name, uint32_t name_len, wasi_nn_graph_t *graph);

WASI_NN_IMPORT("load_by_name_with_config")
wasi_nn_errno_t wasi_nn_load_by_name_with_config(const char *name, uint32_t name_len, const char *config,
                                                 uint32_t config_len, wasi_nn_graph_t *graph);

WASI_NN_IMPORT("init_execution_context")
wasi_nn_errno_t wasi_nn_init_execution_context(wasi_nn_graph_t graph, wasi_nn_context_t *ctx);

WASI_NN_IMPORT("set_input")
wasi_nn_errno_t wasi_nn_set_input(wasi_nn_context_t ctx, uint32_t index, const wasi_nn_tensor_t *tensor);

WASI_NN_IMPORT("compute")
wasi_nn_errno_t wasi_nn_compute(wasi_nn_context_t ctx);

WASI_NN_IMPORT("get_output")
wasi_nn_errno_t wasi_nn_get_output(wasi_nn_context_t ctx, uint32_t index, uint8_t *out, uint32_t out_max,
                                   uint32_t *bytes_written);

/* WasmEdge extensions, also served by WasmInfer. */
WASI_NN_IMPORT("compute_single")
wasi_nn_errno_t wasi_nn_compute_single(wasi_nn_context_t ctx);

WASI_NN_IMPORT("get_output_single")
wasi_nn_errno_t wasi_nn_get_output_single(wasi_nn_context_t ctx, uint32_t index, uint8_t *out, uint32_t out_max,
                                          uint32_t *bytes_written);

WASI_NN_IMPORT("fini_single")
wasi_nn_errno_t wasi_nn_fini_single(wasi_nn_context_t ctx);

WASI_NN_IMPORT("unload")
wasi_nn_errno_t wasi_nn_unload(wasi_nn_graph_t graph);

WASI_NN_IMPORT("finalize_execution_context")
wasi_nn_errno_t wasi_nn_finalize_execution_context(wasi_nn_context_t ctx);

#undef WASI_NN_IMPORT

#endif
