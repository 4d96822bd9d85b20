"""WasmInfer runtime: a WASI-NN host serving wws-compatible Wasm workers."""

__version__ = "0.1.0"
