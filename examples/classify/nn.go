//go:build wasip1

package main

import (
	"fmt"
	"runtime"
	"structs"
	"unsafe"
)

// The wasi-nn core-module ABI (module wasi_ephemeral_nn): every argument is an i32,
// every call returns an errno.

//go:wasmimport wasi_ephemeral_nn load_by_name
func nnLoadByName(name unsafe.Pointer, nameLen uint32, graphOut unsafe.Pointer) uint32

//go:wasmimport wasi_ephemeral_nn init_execution_context
func nnInitExecutionContext(graph uint32, ctxOut unsafe.Pointer) uint32

//go:wasmimport wasi_ephemeral_nn set_input
func nnSetInput(ctx uint32, index uint32, tensor unsafe.Pointer) uint32

//go:wasmimport wasi_ephemeral_nn compute
func nnCompute(ctx uint32) uint32

//go:wasmimport wasi_ephemeral_nn get_output
func nnGetOutput(ctx uint32, index uint32, out unsafe.Pointer, outMax uint32, written unsafe.Pointer) uint32

const tensorTypeF32 = 1 // the same value in both tensor-type numberings in use

// tensor mirrors the 20-byte guest struct. Go's wasm port has 64-bit pointers, so the
// pointer fields are spelled as uint32 linear-memory offsets.
type tensor struct {
	_       structs.HostLayout
	dims    uint32
	dimsLen uint32
	typ     uint32 // only the low byte is read
	data    uint32
	dataLen uint32
}

var errnoNames = []string{
	"success", "invalid_argument", "invalid_encoding", "missing_memory", "busy",
	"runtime_error", "unsupported_operation", "too_large", "not_found",
}

// nnError is a failed wasi-nn call; the errno tells the page what went wrong.
type nnError struct {
	call  string
	errno uint32
}

func (e *nnError) Error() string {
	name := fmt.Sprintf("errno %d", e.errno)
	if int(e.errno) < len(errnoNames) {
		name = errnoNames[e.errno]
	}
	return fmt.Sprintf("wasi-nn %s failed: %s", e.call, name)
}

func check(call string, errno uint32) error {
	if errno != 0 {
		return &nnError{call, errno}
	}
	return nil
}

func offset[T any](p *T) uint32 { return uint32(uintptr(unsafe.Pointer(p))) }

// infer runs one f32 input through the named model and returns output 0.
func infer(model string, input []float32, dims []uint32, outCap int) ([]float32, error) {
	name := []byte(model)
	var graph, ctx uint32
	if err := check("load_by_name", nnLoadByName(unsafe.Pointer(&name[0]), uint32(len(name)), unsafe.Pointer(&graph))); err != nil {
		return nil, err
	}
	if err := check("init_execution_context", nnInitExecutionContext(graph, unsafe.Pointer(&ctx))); err != nil {
		return nil, err
	}
	t := tensor{
		dims:    offset(&dims[0]),
		dimsLen: uint32(len(dims)),
		typ:     tensorTypeF32,
		data:    offset(&input[0]),
		dataLen: uint32(len(input) * 4),
	}
	if err := check("set_input", nnSetInput(ctx, 0, unsafe.Pointer(&t))); err != nil {
		return nil, err
	}
	if err := check("compute", nnCompute(ctx)); err != nil {
		return nil, err
	}
	out := make([]float32, outCap)
	var written uint32
	if err := check("get_output", nnGetOutput(ctx, 0, unsafe.Pointer(&out[0]), uint32(len(out)*4), unsafe.Pointer(&written))); err != nil {
		return nil, err
	}
	runtime.KeepAlive(name)
	runtime.KeepAlive(dims)
	runtime.KeepAlive(input)
	return out[:written/4], nil
}
