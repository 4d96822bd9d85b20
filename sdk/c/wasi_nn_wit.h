/* wasi:nn@0.2.0-rc-2024-10-28 (sdk/wit/wasi-nn.wit) for C components, at the canonical ABI.
 *
 * Build a core module with `sdk/build.py` (a `// component` line in the source makes it a
 * component): it embeds sdk/wit and adapts WASI preview 1 to a wasi:cli/run command.
 * Handles are i32 resource handles; a result<T, error> comes back through a `wasi_nn_result_t`.
 * Lists the host returns (tensor data, dimensions, outputs, error text) are allocated with
 * `cabi_realloc` below, that is with malloc: free them when done.
 */
#ifndef WASI_NN_WIT_H
#define WASI_NN_WIT_H

#include <stdint.h>
#include <stdlib.h>

#define WASI_NN_WIT_VERSION "@0.2.0-rc-2024-10-28"
#define WASI_NN_WIT_IMPORT(iface, name) \
    __attribute__((import_module("wasi:nn/" iface WASI_NN_WIT_VERSION), import_name(name)))

typedef int32_t wasi_nn_handle_t;

enum { NN_FP16, NN_FP32, NN_FP64, NN_BF16, NN_U8, NN_I32, NN_I64 };                          /* tensor-type */
enum { NN_OPENVINO, NN_ONNX, NN_TENSORFLOW, NN_PYTORCH, NN_TFLITE, NN_GGML, NN_AUTODETECT };  /* graph-encoding */
enum { NN_CPU, NN_GPU, NN_TPU };                                                               /* execution-target */
enum {                                                                                         /* error-code */
    NN_INVALID_ARGUMENT, NN_INVALID_ENCODING, NN_TIMEOUT, NN_RUNTIME_ERROR, NN_UNSUPPORTED_OPERATION,
    NN_TOO_LARGE, NN_NOT_FOUND, NN_SECURITY, NN_UNKNOWN
};

typedef struct { uint8_t *ptr; size_t len; } wasi_nn_bytes_t;           /* list<u8>, string */
typedef struct { uint32_t *ptr; size_t len; } wasi_nn_dims_t;           /* list<u32> */
typedef struct { wasi_nn_bytes_t name; wasi_nn_handle_t tensor; } wasi_nn_named_tensor_t;
typedef struct { wasi_nn_named_tensor_t *ptr; size_t len; } wasi_nn_named_tensors_t;

/* result<own<T>, own<error>>: is_err 0 and the handle, or 1 and an error handle. */
typedef struct { uint8_t is_err; wasi_nn_handle_t handle; } wasi_nn_result_t;
/* result<list<named-tensor>, own<error>> */
typedef struct { uint8_t is_err; union { wasi_nn_named_tensors_t ok; wasi_nn_handle_t err; } val; } wasi_nn_outputs_result_t;

/* interface tensor */
WASI_NN_WIT_IMPORT("tensor", "[constructor]tensor")
wasi_nn_handle_t wasi_nn_tensor_new(const uint32_t *dims, size_t ndims, int32_t ty, const uint8_t *data, size_t len);
WASI_NN_WIT_IMPORT("tensor", "[method]tensor.dimensions")
void wasi_nn_tensor_dimensions(wasi_nn_handle_t self, wasi_nn_dims_t *out);
WASI_NN_WIT_IMPORT("tensor", "[method]tensor.ty")
int32_t wasi_nn_tensor_ty(wasi_nn_handle_t self);
WASI_NN_WIT_IMPORT("tensor", "[method]tensor.data")
void wasi_nn_tensor_data(wasi_nn_handle_t self, wasi_nn_bytes_t *out);
WASI_NN_WIT_IMPORT("tensor", "[resource-drop]tensor")
void wasi_nn_tensor_drop(wasi_nn_handle_t self);

/* interface graph */
WASI_NN_WIT_IMPORT("graph", "load")
void wasi_nn_load(const wasi_nn_bytes_t *builders, size_t count, int32_t encoding, int32_t target, wasi_nn_result_t *out);
WASI_NN_WIT_IMPORT("graph", "load-by-name")
void wasi_nn_load_by_name(const char *name, size_t len, wasi_nn_result_t *out);
WASI_NN_WIT_IMPORT("graph", "[method]graph.init-execution-context")
void wasi_nn_init_execution_context(wasi_nn_handle_t graph, wasi_nn_result_t *out);
WASI_NN_WIT_IMPORT("graph", "[resource-drop]graph")
void wasi_nn_graph_drop(wasi_nn_handle_t self);

/* interface inference */
WASI_NN_WIT_IMPORT("inference", "[method]graph-execution-context.compute")
void wasi_nn_compute(wasi_nn_handle_t ctx, const wasi_nn_named_tensor_t *inputs, size_t count, wasi_nn_outputs_result_t *out);
WASI_NN_WIT_IMPORT("inference", "[resource-drop]graph-execution-context")
void wasi_nn_context_drop(wasi_nn_handle_t self);

/* interface errors */
WASI_NN_WIT_IMPORT("errors", "[method]error.code")
int32_t wasi_nn_error_code(wasi_nn_handle_t self);
WASI_NN_WIT_IMPORT("errors", "[method]error.data")
void wasi_nn_error_data(wasi_nn_handle_t self, wasi_nn_bytes_t *out);
WASI_NN_WIT_IMPORT("errors", "[resource-drop]error")
void wasi_nn_error_drop(wasi_nn_handle_t self);

/* Where the host puts the lists it returns. */
__attribute__((export_name("cabi_realloc"), weak))
void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    (void)align; /* malloc's 16-byte alignment covers every canonical ABI type */
    if (new_size == 0) return (void *)align;
    return realloc(ptr, new_size);
}

#endif
